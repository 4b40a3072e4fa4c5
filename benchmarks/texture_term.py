"""Stage 2's texture term in the UV frame (the method's, the reference) against the image-space term, by shape
accuracy on a ``diffface synth`` benchmark, end to end through the command line as a user runs it:

    diffface synth --model builtin --n N --seed S --image-size 128 --out DIR/synth
    diffface fit DIR/synth/images --landmarks pts --stages landmarks --meshes obj --out DIR/landmarks
    diffface fit ... --stages landmarks,texture [--set texture.term=image --set texture.norm=NORM] --out DIR/<name>
    diffface evaluate --compare landmarks=DIR/landmarks uv=DIR/uv ... --gt DIR/synth/meshes --out DIR/evaluation

Prints AUC, mean error (mm, after ICP onto the ground-truth surface) and seconds per image of the fit job
(stage 1 included; the fit summary's time). Fits already in DIR are resumed, not redone.

    python benchmarks/texture_term.py --out DIR [--n 48] [--seed 41] [--norms l21 l1 l2] [--image-term-sizes 112 0]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench_output import add_output_arguments, emit


def diffface(*args: str) -> str:
    """Run ``diffface ARGS`` in this interpreter; its standard output."""
    return subprocess.run([sys.executable, "-m", "diffface", *args], check=True, capture_output=True,
                          text=True).stdout


def fit(out: Path, name: str, stages: str, settings: list[str]) -> float:
    """One fit job into ``out/name`` (resumed if there); seconds per image from its summary."""
    folder = out / name
    extra = [arg for setting in settings for arg in ("--set", setting)]
    diffface("fit", str(out / "synth" / "images"), "--landmarks", "pts", "--stages", stages, "--meshes", "obj",
             "--out", str(folder), "--workers", "0", "--no-tensorboard", "--json", *extra)
    summary = json.loads((folder / "summary.json").read_text())
    return sum(rank["seconds"] for rank in summary["ranks"]) / summary["results"]


def run(out: Path, num_faces: int, seed: int, image_size: int, norms: list[str], image_term_sizes: list[int]) -> dict:
    if not (out / "synth" / "manifest.json").exists():
        diffface("synth", "--model", "builtin", "--n", str(num_faces), "--seed", str(seed), "--image-size",
                 str(image_size), "--out", str(out / "synth"))
    methods = {"landmarks": ("landmarks", []), "uv": ("landmarks,texture", [])}
    for norm in norms:
        if norm != "l21":
            methods[f"uv {norm}"] = ("landmarks,texture", [f"texture.norm={norm}"])
        for size in image_term_sizes:
            methods[f"image {norm} {size or 'crop'}"] = ("landmarks,texture", [
                "texture.term=image", f"texture.norm={norm}", f"texture.image_term_size={size}"])
    seconds = {name: fit(out, name.replace(" ", "_"), stages, settings)
               for name, (stages, settings) in methods.items()}
    compare = [f"{name.replace(' ', '_')}={out / name.replace(' ', '_')}" for name in methods]
    report = json.loads(diffface("evaluate", "--compare", *compare, "--gt", str(out / "synth" / "meshes"),
                                 "--out", str(out / "evaluation"), "--json"))
    rows = {name: {"auc": round(report[f"{name.replace(' ', '_')}/auc"], 4),
                   "mean_mm": round(report[f"{name.replace(' ', '_')}/mean_mm"], 3),
                   "seconds_per_image": round(seconds[name], 2)} for name in methods}
    return {"faces": num_faces, "seed": seed, "image_size": image_size, "rows": rows}


def print_table(result: dict) -> None:
    print(f"{result['faces']} synthetic faces at {result['image_size']} px (seed {result['seed']}); fit crops 224 px; "
          f"image term rows: norm, then the side it compares at (crop: 224)")
    print(f"{'method':<16} {'AUC':>7} {'mean mm':>8} {'s/image':>8}")
    for name, row in result["rows"].items():
        print(f"{name:<16} {row['auc']:>7.4f} {row['mean_mm']:>8.3f} {row['seconds_per_image']:>8.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="working folder (kept; a re-run resumes)")
    parser.add_argument("--n", type=int, default=48, help="synthetic faces (default 48)")
    parser.add_argument("--seed", type=int, default=41)
    parser.add_argument("--image-size", type=int, default=128, help="photo side in pixels (default 128)")
    parser.add_argument("--norms", nargs="+", default=["l21"], choices=["l1", "l2", "l21"],
                        help="texture norms to run (default l21, the method's)")
    parser.add_argument("--image-term-sizes", type=int, nargs="+", default=[0],
                        help="TextureFitConfig.image_term_size values for the image term (default 0: the crop size)")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    emit(run(args.out, args.n, args.seed, args.image_size, args.norms, args.image_term_sizes), args, print_table)


if __name__ == "__main__":
    main()

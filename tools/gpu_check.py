"""The GPU checks of diffface in one run (called by tools/gpu_check.sh, which documents the usage).

Steps, each a subprocess with its own time limit, all within one budget (8 minutes by default); a step that
fails or runs out of time is recorded and the next one runs:

    environment   python, torch, CUDA device, which of diffface's dependencies import
    install       missing dependencies from a wheelhouse (offline), then ``pip install --no-deps -e .``
    cuda_tests    ``pytest -m cuda``: the CUDA case of every device-parametrised test and the CUDA-only tests
    render        benchmarks/bench_render.py: built-in rasterizer against PyTorch3D (its CUDA kernel where it imports)
    fit_stage1    benchmarks/bench_fit.py --stages 1: stage 1 (landmarks) images/s at batch 256, BFM-sized model
    fit_stage2    benchmarks/bench_fit.py --stages 2: stage 2 (texture) images/s at batch 256, BFM-sized model
    network       ``diffface bench network``: latency and throughput (eager CUDA, ONNX Runtime CUDA, TensorRT
                  where installed)
    train_data    ``diffface synth`` + ``diffface build-dataset``: the training set of the next step
    train         ``diffface train``: training images/s

Writes one JSON file: per step its status (ok, failed, timeout, skipped), seconds, limit, return code, the
step's own JSON output (``result``) and the end of its standard error (``error``), plus ``summary`` with the
headline figures. ``--device cpu --quick`` runs the same steps tiny on the CPU (what the tests do).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 480
# import name -> pip name: setup.py's install_requires less torch, pytest, and the ONNX export extra
MODULES = {"numpy": "numpy", "scipy": "scipy", "numba": "numba", "kornia": "kornia", "tensorboard": "tensorboard",
           "tqdm": "tqdm", "yaml": "pyyaml", "PIL": "pillow", "pytest": "pytest", "onnx": "onnx",
           "onnxscript": "onnxscript", "onnxruntime": "onnxruntime-gpu"}
# what --download-wheels fetches (besides the closure of these, less torch and its CUDA libraries)
WHEEL_PACKAGES = ["setuptools>=64", "wheel", *sorted(set(MODULES.values()))]
# never downloaded: the CUDA machine has its own torch
PREINSTALLED_PREFIXES = ("torch", "triton", "nvidia-", "cuda-")


def missing_modules() -> list[str]:
    return [module for module in MODULES if importlib.util.find_spec(module) is None]


def step_commands(args: argparse.Namespace, work: Path) -> list[tuple[str, int, list[str] | None]]:
    """(name, time limit in s, command) of every step; a None command runs in this process (install)."""
    python, device, quick = args.python, args.device, args.quick
    bench = ROOT / "benchmarks"
    tests = ["tests/renderers/test_rasterize.py", "tests/test_camera.py"] if quick else ["tests"]
    render = [python, str(bench / "bench_render.py"), "--device", device, "--json"]
    render += ["--quick", "--no-pytorch3d", "--faces", "20000", "--batch", "2", "--memory-batch", "0"] if quick else []
    fit = [python, str(bench / "bench_fit.py"), "--device", device, "--json"]
    fit += (["--quick", "--models", "builtin", "--batches", "2", "--texture-batch", "1"] if quick else
            ["--models", "bfm-size", "--batches", "256", "--texture-batch", "256"])
    network = [python, "-m", "diffface", "bench", "network", "--json"]
    network += (["--quick", "--formats", "eager,onnx", "--throughput-batch", "8", "--threads", "1"] if quick else
                ["--formats", "eager,onnx,tensorrt"])
    faces, image_size, steps, batch, workers = (8, 96, 2, 4, 0) if quick else (512, 128, 60, 128, 4)
    data = work / "train_data"
    train_data = [python, "-c", _TRAIN_DATA, python, str(data), str(faces), str(image_size), device]
    train = [python, "-m", "diffface", "train", str(data / "dataset"), "--out", str(work / "train_run"),
             "--steps", str(steps), "--batch-size", str(batch), "--workers", str(workers), "--device", device,
             "--json", "--set", "tensorboard=false", "--set", f"val_every={10 * steps}"]
    return [
        ("environment", 30, [python, "-c", _ENVIRONMENT]),
        ("install", 60, None),
        ("cuda_tests", 90, [python, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                            "--junitxml", str(work / "cuda_tests.xml"), *tests]),
        ("render", 60, render),
        ("fit_stage1", 45, fit + ["--stages", "1"]),
        ("fit_stage2", 90, fit + ["--stages", "2"]),
        ("network", 60, network),
        ("train_data", 45, train_data),
        ("train", 60, train),
    ]


_ENVIRONMENT = """
import importlib.util, json, platform, sys
import torch
cuda = torch.cuda.is_available()
print(json.dumps({"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
                  "torch_cuda": torch.version.cuda, "cuda_available": cuda,
                  "device_name": torch.cuda.get_device_name() if cuda else None,
                  "device_count": torch.cuda.device_count(),
                  "importable": {m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}}))
"""

# synth + build-dataset, one JSON object with both summaries (argv: python, folder, faces, image size, device)
_TRAIN_DATA = """
import json, subprocess, sys
python, folder, faces, size, device = sys.argv[1:]
out = {}
for name, command in (("synth", ["synth", "--out", folder + "/synth", "--n", faces, "--image-size", size,
                                 "--device", device, "--json"]),
                      ("build_dataset", ["build-dataset", folder + "/synth", "--out", folder + "/dataset",
                                         "--no-previews", "--val-fraction", "0.25", "--json"])):
    done = subprocess.run([python, "-m", "diffface", *command], capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        sys.exit(done.returncode)
    out[name] = json.loads(done.stdout)
print(json.dumps(out))
"""


def run_command(command: list[str], limit: float, work: Path, name: str) -> dict:
    """Run ``command`` in its own process group, killed whole when it exceeds ``limit`` seconds."""
    stdout, stderr = work / f"{name}.out", work / f"{name}.err"
    start = time.perf_counter()
    with open(stdout, "w") as out, open(stderr, "w") as err:
        process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err, start_new_session=True)
        try:
            returncode = process.wait(timeout=limit)
            status = "ok" if returncode == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the step and everything it started (workers, children)
            returncode, status = process.wait(), "timeout"
    record = {"status": status, "seconds": round(time.perf_counter() - start, 2), "limit_s": round(limit, 1),
              "returncode": returncode, "command": " ".join(command) if "-c" not in command else command[0] + " -c ..."}
    text = stdout.read_text()
    try:
        record["result"] = json.loads(text.strip().splitlines()[-1]) if text.strip() else None
    except json.JSONDecodeError:
        record["result"] = None
        record["stdout_tail"] = text[-2000:]
    if status != "ok":
        record["error"] = stderr.read_text()[-3000:] or f"exit code {returncode}"
    return record


def install(args: argparse.Namespace, limit: float, work: Path) -> dict:
    """Missing dependencies from the wheelhouse (or the index, without one), then diffface without dependencies."""
    start = time.perf_counter()
    missing = missing_modules()
    wheelhouse = Path(args.wheelhouse) if args.wheelhouse else None
    has_wheels = wheelhouse is not None and any(wheelhouse.glob("*.whl"))
    record: dict = {"result": {"missing_before": missing, "wheelhouse": str(wheelhouse) if has_wheels else None}}
    commands = []
    pip = [args.python, "-m", "pip", "install", "--disable-pip-version-check"]
    offline = ["--no-index", "--find-links", str(wheelhouse)] if has_wheels else []
    if missing:
        names = [MODULES[m] if m != "onnxruntime" or args.device.startswith("cuda") else "onnxruntime" for m in missing]
        commands.append(pip + offline + names)
    # no build isolation: it would fetch setuptools from the index (none offline)
    if has_wheels:
        commands.append(pip + offline + ["setuptools>=64", "wheel"])
    commands.append(pip + ["--no-deps", "--no-build-isolation", "-e", str(ROOT)])
    record["result"]["commands"] = [" ".join(c) for c in commands]
    if not args.install:
        record.update(status="skipped", error="--no-install: nothing installed (the commands are listed)")
    else:
        record["status"] = "ok"
        for k, command in enumerate(commands):
            left = limit - (time.perf_counter() - start)
            step = run_command(command, max(left, 1.0), work, f"install_{k}") if left > 0 else {"status": "timeout"}
            if step["status"] != "ok":
                record.update(status=step["status"], returncode=step.get("returncode"),
                              error=step.get("error", "no time left"))
                break
        record["result"]["missing_after"] = missing_modules()
    record.update(seconds=round(time.perf_counter() - start, 2), limit_s=round(limit, 1))
    return record


def junit_counts(path: Path) -> dict | None:
    """Counts and failing test ids of a pytest ``--junitxml`` report."""
    if not path.is_file():
        return None
    root = ElementTree.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["failed_tests"] = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
                              if case.find("failure") is not None or case.find("error") is not None]
    return counts


def summary(steps: dict) -> dict:
    """Headline figures from the steps' results (None where a step gave none)."""
    def result(name: str) -> dict:
        return steps.get(name, {}).get("result") or {}

    render, network, train = result("render"), result("network"), result("train")
    kind = "cuda" if str(render.get("device", "")).startswith("cuda") else "cpu"
    stage1 = result("fit_stage1").get("rows", [])
    stage2 = [r for r in result("fit_stage2").get("texture_rows", []) if r.get("active_vertices")]
    network_rows = {row["variant"]: row for row in network.get("results", [])}
    eager = network_rows.get("eager-cuda") or network_rows.get("eager") or {}
    return {
        "rasterizer_builtin_ms": render.get(f"builtin_{kind}_ms"),
        "rasterizer_pytorch3d_ms": render.get(f"pytorch3d_{kind}_ms"),
        "rasterizer_faces_batch": [render.get("faces"), render.get("batch")] if render else None,
        "stage1_images_per_s": stage1[-1]["landmark_images_per_s"] if stage1 else None,
        "stage1_model_batch": [stage1[-1]["model"], stage1[-1]["batch"]] if stage1 else None,
        "stage2_images_per_s": stage2[-1]["texture_images_per_s"] if stage2 else None,
        "stage2_model_batch": [stage2[-1]["model"], stage2[-1]["batch"]] if stage2 else None,
        "network_eager_ms": eager.get("latency_ms_median"),
        "network_eager_images_per_s": eager.get("throughput_per_s"),
        "network_eager_device": eager.get("device"),
        "tensorrt_fp16_ms": network.get("tensorrt_fp16_ms"),
        "train_images_per_s": train.get("images_per_s"),
    }


def download_wheels(folder: Path, python: str) -> int:
    """On a networked machine (same Python version and platform as the CUDA one): the wheels of every dependency
    but torch and its CUDA libraries, for ``install`` to use offline."""
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        # resolves the whole closure from the packages' metadata, downloading no wheel
        subprocess.run([python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
                        str(report), *WHEEL_PACKAGES], check=True)
        pinned = [f"{item['metadata']['name']}=={item['metadata']['version']}"
                  for item in json.loads(report.read_text())["install"]
                  if not item["metadata"]["name"].lower().startswith(PREINSTALLED_PREFIXES)]
    (folder / "requirements.txt").write_text("\n".join(pinned) + "\n")
    subprocess.run([python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(folder),
                    "-r", str(folder / "requirements.txt")], check=True)
    print(f"{len(pinned)} wheels in {folder} (less {', '.join(PREINSTALLED_PREFIXES)}*): copy the folder to the CUDA "
          "machine as tools/wheels/ or point WHEELHOUSE at it")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="gpu_check.json", help="the JSON file (default gpu_check.json)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--quick", action="store_true", help="every step tiny (with --device cpu: a CPU smoke run)")
    parser.add_argument("--no-install", dest="install", action="store_false",
                        help="install nothing (the install step lists what it would run)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help=f"seconds for all steps (default {BUDGET_S})")
    parser.add_argument("--wheelhouse", default=os.environ.get("WHEELHOUSE", str(ROOT / "tools" / "wheels")),
                        help="folder of wheels for the missing dependencies ($WHEELHOUSE, default tools/wheels)")
    parser.add_argument("--download-wheels", metavar="DIR", type=Path,
                        help="on a networked machine: fill DIR with the wheels install needs, then stop")
    parser.add_argument("--python", default=sys.executable, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.download_wheels:
        return download_wheels(args.download_wheels, args.python)
    started, clock = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
    steps: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        for name, limit, command in step_commands(args, work):
            left = args.budget - (time.perf_counter() - clock)
            if left <= 0:
                steps[name] = {"status": "skipped", "seconds": 0.0, "limit_s": 0.0,
                               "error": f"no time left of the {args.budget:.0f} s budget"}
            elif command is None:
                steps[name] = install(args, min(limit, left), work)
            else:
                if name == "environment":
                    command = command + list(MODULES)
                steps[name] = run_command(command, min(limit, left), work, name)
            if name == "cuda_tests" and "result" in steps[name]:
                steps[name]["result"] = junit_counts(work / "cuda_tests.xml")
                if steps[name].get("returncode") == 5:  # pytest: no test selected (no CUDA here)
                    steps[name]["status"] = "ok"
                    steps[name].pop("error", None)
            print(f"[gpu_check] {name}: {steps[name]['status']} ({steps[name]['seconds']:.1f} s)", file=sys.stderr)
    report = {"started": started, "device": args.device, "quick": args.quick, "budget_s": args.budget,
              "seconds_total": round(time.perf_counter() - clock, 2), "host": platform.node(),
              "steps": steps, "summary": summary(steps)}
    Path(args.out).write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"[gpu_check] wrote {args.out}: " + ", ".join(f"{k} {v['status']}" for k, v in steps.items()),
          file=sys.stderr)
    return 0 if all(step["status"] in ("ok", "skipped") for step in steps.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

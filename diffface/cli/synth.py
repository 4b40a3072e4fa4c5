"""``diffface synth``: write a synthetic benchmark with ground truth (images, landmarks, meshes, parameters), or
synthetic video sequences with ground truth for every frame (``--sequences N --frames T``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .output import print_figures

SEQUENCE_FRAMES = 60  # SequenceConfig.frames, written out (checked in tests/cli/test_synth_cli.py)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "synth", help="write a synthetic benchmark (or video sequences) with ground-truth meshes and parameters",
        description="Render N random faces of a morphable model (yaw up to ±60°, random lighting, backgrounds, "
                    "occluders, blur and noise) and write DIR/images/NAME.png + NAME.pts (68 landmarks), "
                    "DIR/meshes/NAME.obj (ground truth: subdivided and displaced, model space, mm) + "
                    "NAME_landmarks.npy, DIR/params.npz (true parameters) and DIR/manifest.json. With --sequences "
                    "N --frames T: N videos of one subject each (smooth head motion and expression, no occluders), "
                    "frames in DIR/images/seq_000/seq_000_f0000.png + .pts, ground truth flat in "
                    "DIR/meshes/seq_000_f0000.obj.")
    p.add_argument("--out", type=Path, required=True,
                   help="output folder: new, empty, or a previous benchmark (replaced)")
    p.add_argument("--model", default="builtin", help="'builtin' (default) or a model file")
    count = p.add_mutually_exclusive_group()
    count.add_argument("--n", type=int, default=32, help="number of faces (default 32)")
    count.add_argument("--sequences", type=int, metavar="N",
                       help="write N video sequences instead of single faces (not with --n)")
    p.add_argument("--frames", type=int, metavar="T",
                   help=f"frames per sequence (default {SEQUENCE_FRAMES}; with --sequences)")
    p.add_argument("--static-sequences", type=int, metavar="K",
                   help="the first K sequences keep pose and expression fixed, only image and landmark noise "
                        "change, to measure jitter (default 1 with 2 or more sequences, else 0; with --sequences)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the benchmark is a pure function of it")
    p.add_argument("--image-size", type=int, default=224, help="square image side in pixels (default 224)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    # defaults written out (SceneConfig's, SynthBenchmarkConfig's and SequenceConfig's, checked in
    # tests/cli/test_synth_cli.py) so that `diffface --help` does not import the benchmark generator and the renderers
    p.add_argument("--landmark-noise", type=float, default=2.0, metavar="PX",
                   help="σ of the noise on each .pts landmark, pixels (default 2)")
    p.add_argument("--landmark-offset", type=float, default=0.0, metavar="PX",
                   help="a detector's structured error: σ of one shift of all landmarks per face, pixels")
    p.add_argument("--landmark-scale", type=float, default=0.0, metavar="F",
                   help="σ of one relative scale of the landmarks per face about their centroid (0.03: 3 %%)")
    p.add_argument("--contour-slide", type=float, default=0.0, metavar="PX",
                   help="σ of each jaw-contour landmark's slide along the jaw, pixels")
    p.add_argument("--subdivision-levels", type=int, default=1,
                   help="midpoint subdivisions of the ground-truth meshes (each: faces x4; default 1; 0 keeps "
                        "evaluation fast, still displaced off the model)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="faces rendered at once (default 8; the faces do not depend on it)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from diffface.app.synth_benchmark import SynthBenchmarkConfig, benchmark_scene, generate_benchmark
    from diffface.app.synth_sequences import SequenceConfig, generate_sequences

    if args.sequences is None and (args.frames is not None or args.static_sequences is not None):
        raise ValueError("--frames and --static-sequences apply to --sequences N")
    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    if args.image_size < 16:
        raise ValueError(f"--image-size must be at least 16, got {args.image_size}")
    for name in ("landmark_noise", "landmark_offset", "landmark_scale", "contour_slide"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must not be negative, got {getattr(args, name)}")
    scene = replace(benchmark_scene(args.image_size, args.seed), landmark_noise_px=args.landmark_noise,
                    landmark_offset_px=args.landmark_offset, landmark_scale=args.landmark_scale,
                    contour_slide_px=args.contour_slide)
    settings = dict(model=args.model, device=args.device, scene=scene, subdivision_levels=args.subdivision_levels,
                    batch_size=args.batch_size)
    if args.sequences is None:
        config = SynthBenchmarkConfig(num_faces=args.n, **settings)
        with tqdm(total=args.n, desc="synthetic faces", unit="face", disable=args.json) as bar:
            summary = generate_benchmark(args.out, config, progress=bar.update)
    else:
        frames = SEQUENCE_FRAMES if args.frames is None else args.frames
        for option, value in (("--sequences", args.sequences), ("--frames", frames)):
            if value < 1:
                raise ValueError(f"{option} must be at least 1, got {value}")
        if args.static_sequences is not None and not 0 <= args.static_sequences <= args.sequences:
            raise ValueError(f"--static-sequences must be between 0 and --sequences ({args.sequences}), "
                             f"got {args.static_sequences}")
        # the sequences' own frame settings (no occluders) with the options given
        sequences = SequenceConfig(num_sequences=args.sequences, frames=frames, static_sequences=args.static_sequences,
                                   render=replace(SequenceConfig().render, **settings))
        with tqdm(total=args.sequences * frames, desc="synthetic frames", unit="frame", disable=args.json) as bar:
            summary = generate_sequences(args.out, sequences, progress=bar.update)
    print_figures(summary, args.json, title="diffface synth")
    return 0

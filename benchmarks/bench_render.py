"""Benchmark the built-in rasterizer against PyTorch3D's CPU rasterizer, in one run.

Renders the built-in model's mean face on finer grids (about 20,000 and 70,000 triangles) at
224 x 224, batch 1 and 32, with random head poses, and a 20,480-triangle sphere at batch 1. Times are medians over repeats after warm-up, on this machine's CPU threads.
PyTorch3D (naive ``bin_size=0``, the exact mode, one face per pixel, perspective-correct) is
timed in the same run when it imports, i.e. under the PyTorch3D venv::

    .venv-p3d/bin/python benchmarks/bench_render.py            # table
    .venv-p3d/bin/python benchmarks/bench_render.py --json     # one JSON object
    .venv/bin/python benchmarks/bench_render.py --quick        # under a minute (PyTorch3D: 20k faces, batch 1 only)
    python benchmarks/bench_render.py --device cuda --json      # both rasterizers on the GPU (PyTorch3D's CUDA kernel)

PyTorch3D's naive CPU rasterizer visits every face for every pixel, so a batch of 32 takes
minutes; its batch-32 time is measured on the first ``--p3d-images`` images and scaled to the
batch (the row says so in ``pytorch3d_images_timed``). Peak memory is measured for a batch of 256
in a fresh subprocess as the growth of the peak resident set size during one forward pass; on CUDA
(``--device cuda``) as the peak of ``torch.cuda.max_memory_allocated`` over one forward pass, in process.
Timing keys name the device: ``builtin_cpu_ms`` / ``builtin_cuda_ms``, ``pytorch3d_cpu_ms`` / ``pytorch3d_cuda_ms``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from bench_output import add_output_arguments, emit

from diffface.builtin_geometry import build_face_grid
from diffface.camera import perspective_project
from diffface.renderers.pytorch3d_backend import pytorch3d_available, rasterize_meshes_pytorch3d
from diffface.renderers.rasterize import interpolate_attributes, rasterize_meshes
from diffface.renderers.rasterize_reference import uv_sphere

IMAGE_SIZE = 224
QUICK_PYTORCH3D_MAX_FACES = 25000


def face_mesh(target_faces: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The built-in model's mean face on a finer grid: about ``target_faces`` triangles, in millimetres.

    :func:`diffface.builtin_geometry.build_face_grid` with the odd ``n x n`` grid whose triangle
    count is closest to the target (the shipped model uses 81 x 81, 12,768 triangles).

    Shape:
        -> vertices (n², 3) float32, faces (F, 3) long.
    """
    sides = range(21, 401, 2)
    side = min(sides, key=lambda n: abs(2 * (n - 1) ** 2 - target_faces))
    grid = build_face_grid(side, side)
    return torch.from_numpy(grid.vertices).float(), torch.from_numpy(grid.triangles).long()


def sphere_mesh(target_faces: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A UV sphere of radius 100 mm with ``2·128·(rings - 1)`` ≈ ``target_faces`` triangles (20,480 for 20,480).

    Shape:
        -> vertices (V, 3) float32, faces (F, 3) long.
    """
    segments = 128
    rings = round(target_faces / (2 * segments)) + 1
    vertices, faces = uv_sphere(rings, segments)
    return 100 * vertices, faces


def screen_vertices(vertices: torch.Tensor, batch: int, seed: int = 0) -> torch.Tensor:
    """The mesh seen by ``batch`` random head poses at 600 mm, framed in a 224 px image.

    Shape:
        vertices: (V, 3) -> (B, V, 3) pixel u, v and camera depth.
    """
    g = torch.Generator().manual_seed(seed)
    angles = (torch.rand(batch, 3, generator=g) - 0.5) * torch.tensor([0.4, 1.0, 0.3])
    translation = torch.tensor([[0.0, 0.0, 600.0]]).repeat(batch, 1)
    focal = torch.full((batch, 1), 500.0 * IMAGE_SIZE / 224)
    centre = torch.full((batch, 2), (IMAGE_SIZE - 1) / 2)
    uv, depth = perspective_project(vertices.expand(batch, -1, -1), angles, translation, focal, centre)
    return torch.cat([uv, depth[..., None]], -1)


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that the clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, warmup: int, repeats: int, device: torch.device = torch.device("cpu")) -> tuple[float, object]:
    """Median wall time (ms) of ``fn()`` over ``repeats`` calls after ``warmup`` calls, and its last output."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times), out


def forward_backward(screen: torch.Tensor, faces: torch.Tensor, colours: torch.Tensor) -> None:
    vertices = screen.detach().requires_grad_()
    frags = rasterize_meshes(vertices, faces, IMAGE_SIZE)
    interpolate_attributes(frags, faces, colours).sum().backward()


def measure_memory(num_faces: int, batch: int, with_backward: bool = True) -> dict:
    """Peak RSS growth (MB) of one batched forward pass, and of forward + backward, each in a fresh process."""
    out = {}
    for mode in ("forward", "backward") if with_backward else ("forward",):
        result = subprocess.run([sys.executable, __file__, "--memory-child", str(num_faces), str(batch), mode],
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            return {"faces": num_faces, "batch": batch, "error": result.stderr[-500:]}
        out.update(json.loads(result.stdout))
    return out


def _memory_child(num_faces: int, batch: int, mode: str) -> None:
    vertices, faces = face_mesh(num_faces)
    screen = screen_vertices(vertices, batch)
    colours = torch.rand(batch, vertices.shape[0], 3)
    forward_backward(screen[:1], faces, colours[:1])  # load everything lazily loaded
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if mode == "forward":
        frags = rasterize_meshes(screen, faces, IMAGE_SIZE)
    else:
        forward_backward(screen, faces, colours)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if mode == "forward":
        outputs = sum(t.numel() * t.element_size() for t in (frags.pix_to_face, frags.bary_coords, frags.zbuf, frags.mask))
        print(json.dumps({"faces": int(faces.shape[0]), "batch": batch, "peak_growth_mb": round(peak - before, 1),
                          "outputs_mb": round(outputs / 2 ** 20, 1), "inputs_mb": round(screen.numel() * 4 / 2 ** 20, 1),
                          "forward_ms": round(1000 * seconds, 1)}))
    else:
        print(json.dumps({"peak_growth_mb_fwd_bwd": round(peak - before, 1), "fwd_bwd_ms": round(1000 * seconds, 1)}))


def measure_cuda_memory(num_faces: int, batch: int, device: torch.device) -> dict:
    """Peak CUDA memory (MB) allocated during one batched forward pass, above what was allocated before."""
    vertices, faces = face_mesh(num_faces)
    screen, faces = screen_vertices(vertices, batch).to(device), faces.to(device)
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    rasterize_meshes(screen, faces, IMAGE_SIZE)
    synchronize(device)
    return {"faces": int(faces.shape[0]), "batch": batch, "device": str(device),
            "peak_growth_mb": round((torch.cuda.max_memory_allocated(device) - before) / 2 ** 20, 1),
            "forward_ms": round(1000 * (time.perf_counter() - start), 1)}


def run(quick: bool, p3d_images: int, with_pytorch3d: bool, device: str = "cpu",
        targets: tuple[int, ...] = (20000, 70000), big_batch: int = 32, memory_batch: int = 256) -> dict:
    """Every case on ``device``; ``targets``: face counts of the face mesh; ``big_batch``: the batched case;
    ``memory_batch``: the batch of the memory measurement (0: none)."""
    device = torch.device(device)
    # (mesh name, builder, target faces, batches): the built-in face at two resolutions, and the
    # 20,480-face sphere the issue quotes PyTorch3D's CPU time for.
    cases = [("face", face_mesh, target, (1, big_batch)) for target in targets] + [("sphere", sphere_mesh, 20480, (1,))]
    rows = []
    kind = device.type
    if with_pytorch3d:  # first-call costs (extension loading) out of the timings
        tiny_vertices, tiny_faces = face_mesh(800)
        rasterize_meshes_pytorch3d(screen_vertices(tiny_vertices, 1).to(device), tiny_faces.to(device), IMAGE_SIZE)
    for mesh, build, target, batches in cases:
        vertices, faces = build(target)
        faces = faces.to(device)
        colours = torch.rand(1, vertices.shape[0], 3, device=device).expand(max(batches), -1, -1)
        for batch in batches:
            screen = screen_vertices(vertices, batch).to(device)
            big = batch > 1
            warmup, repeats = ((1, 1) if quick else (1, 3)) if big else (3, 10 if quick else 25)
            builtin_ms, frags = median_ms(lambda: rasterize_meshes(screen, faces, IMAGE_SIZE), warmup, repeats, device)
            fwd_bwd_ms, _ = median_ms(lambda: forward_backward(screen, faces, colours[:batch]), warmup, repeats, device)
            row = {"mesh": mesh, "faces": int(faces.shape[0]), "batch": batch, "image_size": [IMAGE_SIZE, IMAGE_SIZE],
                   "device": str(device), "coverage": round(float(frags.mask.float().mean()), 4),
                   f"builtin_{kind}_ms": round(builtin_ms, 2), "builtin_fwd_bwd_ms": round(fwd_bwd_ms, 2),
                   f"pytorch3d_{kind}_ms": None, "pytorch3d_images_timed": None, "speedup_vs_pytorch3d": None,
                   "pix_to_face_agreement": None}
            # --quick times PyTorch3D only where it takes seconds, not minutes (on the CPU)
            slow = quick and kind == "cpu" and not (batch == 1 and faces.shape[0] <= QUICK_PYTORCH3D_MAX_FACES)
            if with_pytorch3d and not slow:
                timed = min(batch, p3d_images) if big and kind == "cpu" else batch
                part = screen[:timed]
                p3d_ms, theirs = median_ms(lambda: rasterize_meshes_pytorch3d(part, faces, IMAGE_SIZE),
                                           0 if (big or quick) else 1, 1 if (big or quick) else 3, device)
                p3d_ms *= batch / timed
                agreement = float((theirs.pix_to_face == frags.pix_to_face[:timed]).float().mean())
                row.update({f"pytorch3d_{kind}_ms": round(p3d_ms, 1), "pytorch3d_images_timed": timed,
                            "speedup_vs_pytorch3d": round(p3d_ms / builtin_ms, 1),
                            "pix_to_face_agreement": round(agreement, 6)})
            rows.append(row)
    if not memory_batch:
        memory = []
    elif kind == "cuda":
        memory = [measure_cuda_memory(target, memory_batch, device) for target in targets]
    else:
        memory = [measure_memory(target, memory_batch, with_backward=not quick) for target in targets]
    head = rows[0]
    return {"faces": head["faces"], "image_size": head["image_size"], "batch": head["batch"], "device": str(device),
            "cuda_device": torch.cuda.get_device_name(device) if kind == "cuda" else None,
            f"builtin_{kind}_ms": head[f"builtin_{kind}_ms"], f"pytorch3d_{kind}_ms": head[f"pytorch3d_{kind}_ms"],
            "speedup_vs_pytorch3d": head["speedup_vs_pytorch3d"],
            "pix_to_face_agreement": head["pix_to_face_agreement"],
            "rows": rows, f"memory_batch{memory_batch}": memory, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "pytorch3d": _pytorch3d_version() if with_pytorch3d else None,
            "quick": quick}


def _pytorch3d_version() -> str:
    import pytorch3d

    return pytorch3d.__version__


def print_table(result: dict) -> None:
    kind = result["device"].split(":")[0]
    print(f"torch {result['torch']}, {result['cuda_device'] or str(result['threads']) + ' CPU threads'}, "
          f"PyTorch3D {result['pytorch3d'] or 'not importable'}")
    header = (f"{'mesh':>6} {'faces':>7} {'batch':>5} {'image':>8} {'builtin ms':>11} {'fwd+bwd ms':>11} "
              f"{'pytorch3d ms':>13} {'speedup':>8} {'agreement':>10}")
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        p3d = "-" if r[f"pytorch3d_{kind}_ms"] is None else f"{r[f'pytorch3d_{kind}_ms']:.0f}"
        if r["pytorch3d_images_timed"] is not None and r["pytorch3d_images_timed"] < r["batch"]:
            p3d += "*"
        speed = "-" if r["speedup_vs_pytorch3d"] is None else f"{r['speedup_vs_pytorch3d']:.0f}x"
        agree = "-" if r["pix_to_face_agreement"] is None else f"{100 * r['pix_to_face_agreement']:.3f}%"
        print(f"{r['mesh']:>6} {r['faces']:>7} {r['batch']:>5} {r['image_size'][0]}x{r['image_size'][1]:<4} "
              f"{r[f'builtin_{kind}_ms']:>11.2f} "
              f"{r['builtin_fwd_bwd_ms']:>11.2f} {p3d:>13} {speed:>8} {agree:>10}")
    if any(r["pytorch3d_images_timed"] not in (None, r["batch"]) for r in result["rows"]):
        print("* PyTorch3D timed on the first images of the batch and scaled to the batch")
    for m in next(value for key, value in result.items() if key.startswith("memory_batch")):
        if "error" in m:
            print(f"memory, batch {m['batch']}: failed: {m['error']}")
        elif kind == "cuda":
            print(f"memory, batch {m['batch']} x {m['faces']} faces: peak CUDA allocation {m['peak_growth_mb']:.0f} MB "
                  f"forward ({m['forward_ms']:.0f} ms)")
        else:
            line = (f"memory, batch {m['batch']} x {m['faces']} faces: peak RSS growth {m['peak_growth_mb']:.0f} MB forward "
                    f"(outputs {m['outputs_mb']:.0f} MB, inputs {m['inputs_mb']:.0f} MB, first call {m['forward_ms']:.0f} ms)")
            if "peak_growth_mb_fwd_bwd" in m:
                line += (f", {m['peak_growth_mb_fwd_bwd']:.0f} MB forward + backward of interpolated colours "
                         f"({m['fwd_bwd_ms']:.0f} ms)")
            print(line)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_output_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (under a minute)")
    parser.add_argument("--no-pytorch3d", action="store_true", help="skip PyTorch3D even when it imports")
    parser.add_argument("--p3d-images", type=int, default=2,
                        help="images of a batch that PyTorch3D renders for its batch-32 time (scaled to the batch)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--faces", default="20000,70000", help="face counts of the face mesh, comma-separated")
    parser.add_argument("--batch", type=int, default=32, help="the batched case (default 32)")
    parser.add_argument("--memory-batch", type=int, default=256, help="batch of the memory measurement (0: none)")
    parser.add_argument("--memory-child", nargs=3, metavar=("FACES", "BATCH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        _memory_child(int(args.memory_child[0]), int(args.memory_child[1]), args.memory_child[2])
        return
    with_pytorch3d = pytorch3d_available() and not args.no_pytorch3d
    p3d_images = 1 if args.quick else args.p3d_images
    targets = tuple(int(f) for f in args.faces.split(","))
    result = run(args.quick, p3d_images, with_pytorch3d, args.device, targets, args.batch, args.memory_batch)
    emit(result, args, print_table)


if __name__ == "__main__":
    main()

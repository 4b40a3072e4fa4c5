"""Evaluation throughput: ICP onto a 50,000-vertex scan surface + metrics, pairs/s on CPU.

A smooth face-like height field (50,176 vertices, ~99k triangles) is the scan; the reconstruction
is ~35k points sampled on it, moved by a random similarity and perturbed by 0.5 mm noise. The
exact closest-point query (of the aligned reconstruction) is timed against the brute-force reference
on a subset of points, and against the inexact one (the triangles of the 8 nearest centroids), in the
same run. The compiled kernels are warmed up on a tiny mesh first:
``kernel_compile_s`` is that one-off cost (numba compiling them, or loading them from its on-disk
cache when ``kernels_from_cache``). The load average is printed because the timings share the CPU.

    python benchmarks/bench_eval.py [--quick] [--json] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy.spatial.transform import Rotation

from bench_output import add_output_arguments, emit
from diffface.evaluation import (TriangleMeshIndex, closest_points_brute_force, error_mm_stats, icp,
                                 normalized_distance_d, triangle_kernels)
from diffface.evaluation.reference_meshes import height_field_scan


def warm_up() -> tuple[float, bool]:
    """Run every compiled kernel once on a tiny mesh: (seconds taken, whether all came from numba's cache)."""
    start = time.perf_counter()
    vertices, faces = height_field_scan(5)
    index = TriangleMeshIndex(vertices, faces)
    index.query(vertices[:4])
    index.query(vertices[:4], exact=False)
    triangle_kernels.project_pairs(vertices[:2], vertices[faces[:2]])
    seconds = time.perf_counter() - start
    kernels = [value for value in vars(triangle_kernels).values() if hasattr(value, "stats")]
    return seconds, not any(kernel.stats.cache_misses for kernel in kernels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 pairs, 100 brute-force points")
    add_output_arguments(parser)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vertices, faces = height_field_scan(224)
    pairs, brute_points = (2, 100) if args.quick else (5, 400)
    load_before = os.getloadavg()[0]
    compile_s, from_cache = warm_up()
    start = time.perf_counter()
    index = TriangleMeshIndex(vertices, faces)
    build_s = time.perf_counter() - start
    icp_times, d_values, iterations = [], [], []
    for k in range(pairs):
        tri = rng.choice(len(faces), 35000)
        truth = np.einsum("nk,nkd->nd", rng.dirichlet([1, 1, 1], 35000), vertices[faces[tri]])
        recon = truth + rng.normal(size=truth.shape) * 0.5
        recon = 1.1 * recon @ Rotation.random(random_state=k).as_matrix().T + rng.normal(size=3) * 10
        start = time.perf_counter()
        result = icp(recon, None, None, with_scale=True, init=(recon[:68], truth[:68]), index=index)
        d_values.append(float(normalized_distance_d(result.aligned, result.projections)))
        error_mm_stats(result.distances)
        icp_times.append(time.perf_counter() - start)
        iterations.append(result.iterations)
    query_points = result.aligned[:brute_points]
    start = time.perf_counter()
    fast = index.query(result.aligned)
    query_s = time.perf_counter() - start
    start = time.perf_counter()
    index.query(result.aligned, exact=False)
    k_nearest_s = time.perf_counter() - start
    start = time.perf_counter()
    slow = closest_points_brute_force(query_points, vertices, faces)
    brute_s_per_point = (time.perf_counter() - start) / brute_points
    result = {
        "load_average_1min": f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} CPUs)",
        "kernel_compile_s": compile_s, "kernels_from_cache": from_cache,
        "scan_vertices": len(vertices), "scan_faces": len(faces), "reconstruction_vertices": 35000,
        "pairs": pairs, "index_build_s": build_s, "icp_plus_metrics_s_mean": float(np.mean(icp_times)),
        "pairs_per_s": float(1 / np.mean(icp_times)), "icp_iterations_mean": float(np.mean(iterations)),
        "d_mean": float(np.mean(d_values)), "closest_point_query_s_35k": query_s,
        "k_nearest_centroids_query_s_35k": k_nearest_s,
        "brute_force_s_35k_extrapolated": brute_s_per_point * 35000,
        "speedup_vs_brute_force": brute_s_per_point * 35000 / query_s,
        "max_abs_difference_vs_brute_force": float(np.abs(fast.distances[:brute_points] - slow.distances).max()),
    }

    def table(r: dict) -> None:
        print("evaluation benchmark (CPU)")
        for key, value in r.items():
            print(f"  {key:<36} {value:.4g}" if isinstance(value, float) else f"  {key:<36} {value}")

    emit(result, args, table)


if __name__ == "__main__":
    main()

"""Evaluation throughput: ICP onto a 50,000-vertex scan surface + metrics, pairs/s on CPU.

A smooth face-like height field (50,176 vertices, ~99k triangles) is the scan; the reconstruction
is ~35k points sampled on it, moved by a random similarity and perturbed by 0.5 mm noise. The
exact KD-tree closest-point query (of the aligned reconstruction) is timed against the brute-force reference on a subset of points
in the same run.

    python benchmarks/bench_eval.py [--quick] [--json] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.spatial.transform import Rotation

from bench_output import add_output_arguments, emit
from diffface.evaluation import (TriangleMeshIndex, closest_points_brute_force, error_mm_stats, icp,
                                 normalized_distance_d)
from diffface.evaluation.reference_meshes import height_field_scan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 pairs, 100 brute-force points")
    add_output_arguments(parser)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vertices, faces = height_field_scan(224)
    pairs, brute_points = (2, 100) if args.quick else (5, 400)
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
    slow = closest_points_brute_force(query_points, vertices, faces)
    brute_s_per_point = (time.perf_counter() - start) / brute_points
    result = {
        "scan_vertices": len(vertices), "scan_faces": len(faces), "reconstruction_vertices": 35000,
        "pairs": pairs, "index_build_s": build_s, "icp_plus_metrics_s_mean": float(np.mean(icp_times)),
        "pairs_per_s": float(1 / np.mean(icp_times)), "icp_iterations_mean": float(np.mean(iterations)),
        "d_mean": float(np.mean(d_values)), "closest_point_query_s_35k": query_s,
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

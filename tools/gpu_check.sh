#!/usr/bin/env bash
# The GPU checks of diffface on a CUDA machine, in at most 8 minutes, into one JSON file.
#
# For a machine with only PyTorch (CUDA build) preinstalled and no network: first, on a networked machine
# with the same Python version and platform, fetch the other dependencies' wheels (never torch):
#
#   tools/gpu_check.sh --download-wheels tools/wheels      # pip download of the closure, less torch/nvidia-*
#
# then carry tools/wheels/ (or any folder, as $WHEELHOUSE) with the checkout and run on the CUDA machine:
#
#   tools/gpu_check.sh [gpu_check.json]                    # default output: gpu_check.json
#
# Steps (each with its own time limit inside the 480 s budget; a failed or timed-out step is recorded and
# the next one runs): environment; install (the missing dependencies from the wheelhouse, then
# `pip install --no-deps -e .`); `pytest -m cuda`; the rasterizer benchmark (built-in against PyTorch3D's
# CUDA rasterizer where it imports); stage 1, then stage 2 fitting images/s at batch 256 on a BFM-sized model;
# `diffface bench network` (eager CUDA, ONNX Runtime CUDA, TensorRT where installed); a synthetic training
# set and `diffface train` images/s. The JSON has each step's status, seconds, output and errors, and a
# summary of the headline figures.
#
# Options: --device cuda|cpu, --quick (every step tiny), --no-install, --budget SECONDS, --wheelhouse DIR.
# `tools/gpu_check.sh --device cpu --quick --no-install out.json` runs the same steps tiny on a CPU (the test).
# Env: PYTHON (default: python3 on PATH), WHEELHOUSE (default: tools/wheels).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$(command -v python3 || command -v python)}"
exec "$python" "$root/tools/gpu_check.py" --python "$python" "$@"

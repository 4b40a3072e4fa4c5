#!/usr/bin/env bash
# Create the PyTorch3D reference environment used by the parity test and the renderer benchmark.
#
# PyTorch3D has no wheel for our main torch, so it lives in its own venv: Python 3.11,
# torch 2.2.2 and the `pipablepytorch3d` 0.7.6 wheel (built against torch 2.2). The torch wheel
# from the registry is the CUDA build (about 5 GB with its nvidia-* dependencies); PyTorch3D's
# rasterizer runs on the CPU there all the same. diffface is installed editable without its
# dependencies so that both venvs test the same checkout.
#
# Usage: tools/setup_pytorch3d_env.sh [VENV_DIR]   (default: .venv-p3d at the repository root)
# Env:   PYTHON311 (default: python3.11 on PATH)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$repo_root/.venv-p3d}"
python311="${PYTHON311:-python3.11}"

if ! command -v "$python311" >/dev/null 2>&1; then
    echo "error: $python311 not found; PyTorch3D 0.7.6 wheels need Python 3.11 (set PYTHON311)" >&2
    exit 1
fi

start=$(date +%s)
if [ ! -x "$venv/bin/python" ]; then
    "$python311" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install --upgrade pip
"${pip[@]}" install "torch==2.2.2" "pipablepytorch3d==0.7.6" "numpy<2"
"${pip[@]}" install pytest scipy pillow tqdm pyyaml "kornia==0.7.2"
"${pip[@]}" install --no-deps -e "$repo_root"

"$venv/bin/python" - <<'PY'
import torch, pytorch3d
from pytorch3d.renderer.mesh import rasterize_meshes  # noqa: F401  (fails if the C++ extension is broken)
import diffface.renderers.pytorch3d_backend as backend
assert backend.pytorch3d_available()
print(f"torch {torch.__version__}, pytorch3d {pytorch3d.__version__}: OK")
PY
echo "PyTorch3D environment ready at $venv in $(( $(date +%s) - start )) s"

#!/usr/bin/env bash
# Remake networks/pretrained/mobileface_builtin.pt, the network `diffface demo` fine-tunes on the built-in
# model: 3,000 synthetic faces (seeds 100 and 200: none of the demo's), their stage-1 fits, the demo's
# automatic curation, 2,400 steps of the default recipe (TrainConfig), evaluated on 100 held-out faces;
# the command and those figures go into mobileface_builtin.json beside it.
# About 20 minutes on 2 CPU cores. Usage: tools/make_pretrained.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"
exec "$PY" benchmarks/network_accuracy.py --no-truth --steps 2400 --threads 2 \
    --cache benchmark_cache/network_accuracy --out benchmark_out/pretrained \
    --save-checkpoint networks/pretrained/mobileface_builtin.pt

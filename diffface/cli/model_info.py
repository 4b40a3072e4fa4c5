"""``diffface model-info MODEL``: sizes of a morphable model ("builtin" or a file)."""

from __future__ import annotations

from ..morphable_model import load_model_data
from .output import print_figures


def add_parser(sub) -> None:
    p = sub.add_parser("model-info", help="print the sizes of a morphable model",
                       description="Print vertices, faces, mode counts and landmarks of a morphable model: "
                                   "'builtin' or any supported model file.")
    p.add_argument("model", help="'builtin', a diffface .npz, or a file convert-model reads")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    data = load_model_data(args.model)
    print_figures(data.info(), args.json, title=f"morphable model {args.model}")
    return 0

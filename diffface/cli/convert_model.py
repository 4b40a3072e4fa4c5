"""``diffface convert-model SRC --out DST.npz``: any supported model file to diffface's format."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..model_format import save_model_npz
from .output import print_figures

LOADER_OPTIONS = ("landmarks", "contours", "expression", "expression_std", "expression_index", "expression_mean",
                  "triangles", "param_stats", "scale_to_mm")


def add_parser(sub) -> None:
    from ..loaders import FORMATS

    p = sub.add_parser(
        "convert-model", help="convert a morphable model file to diffface's .npz",
        description="Convert a morphable model (BFM 2009 .mat, BFM 2017 .h5, Surrey .npz/.bin, 3DDFA .pkl, "
                    "or a diffface .npz) to diffface's canonical .npz. The format is detected from the file "
                    "unless --format is given.")
    p.add_argument("source", help="the model file ('builtin' writes the procedural model)")
    p.add_argument("--out", required=True, type=Path, help="output .npz")
    p.add_argument("--format", choices=sorted(FORMATS), default=None, help="force the input format")
    p.add_argument("--landmarks", type=Path, default=None,
                   help="68 iBUG landmark vertex indices (.txt/.npy, 0-based) or an eos-style TOML mapping")
    p.add_argument("--contours", type=Path, default=None, help="eos-style model contour .json")
    p.add_argument("--expression", type=Path, default=None,
                   help="expression model to add (e.g. Deep3DFaceRecon's Exp_Pca.bin, eos blendshapes .bin)")
    p.add_argument("--expression-std", type=Path, default=None,
                   help="bfm2009: per-mode σ of the expression basis (Deep3DFaceRecon's std_exp.txt)")
    p.add_argument("--expression-index", type=Path, default=None,
                   help="bfm2009: expression-to-BFM vertex map (Deep3DFaceRecon's BFM_exp_idx.mat)")
    p.add_argument("--expression-mean", action=argparse.BooleanOptionalAction, default=None,
                   help="bfm2009/bfm2017: add the expression model's mean to the shape mean")
    p.add_argument("--triangles", type=Path, default=None, help="3ddfa: triangle file (3DDFA_V2 configs/tri.pkl)")
    p.add_argument("--param-stats", type=Path, default=None,
                   help="3ddfa: parameter statistics giving the priors' σ (3DDFA's param_mean_std .pkl)")
    p.add_argument("--scale-to-mm", type=float, default=None,
                   help="override the unit conversion of the source (factor from its units to millimetres)")
    p.add_argument("--json", action="store_true", help="print the converted model's figures as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.source == "builtin":
        from ..builtin_model import build_builtin_model

        data = build_builtin_model()
    else:
        from ..loaders import load_any_model

        options = {name: getattr(args, name) for name in LOADER_OPTIONS}
        data = load_any_model(args.source, format=args.format, **options)  # options left None are ignored
    out = save_model_npz(data, args.out)
    figures = {"out": str(out), **data.info()}
    print_figures(figures, args.json, title=f"converted {args.source}")
    return 0

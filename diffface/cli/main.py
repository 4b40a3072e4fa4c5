"""Entry point of ``diffface <command>`` (also ``python -m diffface``)."""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from .. import __version__

# command name -> module under diffface.cli; each module defines add_parser(subparsers) and run(args)
COMMANDS = {
    "demo": "demo",
    "model-info": "model_info",
    "convert-model": "convert_model",
    "landmarks": "landmarks",
    "fit": "fit",
    "synth": "synth",
    "evaluate": "evaluate",
    "baselines": "baselines",
    "build-dataset": "build_dataset",
    "curate": "curate",
    "train": "train",
    "predict": "predict",
    "export": "export",
    "bench": "bench",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diffface",
        description="Monocular 3D face reconstruction around a differentiable renderer.",
    )
    parser.add_argument("--version", action="version", version=f"diffface {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for module_name in COMMANDS.values():
        import_module(f"{__package__}.{module_name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        # Bad input gets one clear line naming the culprit, not a traceback.
        print(f"diffface {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

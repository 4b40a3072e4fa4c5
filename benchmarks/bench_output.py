"""Output shared by the benchmark scripts: ``--json``, ``--json-out`` and the printed table."""

from __future__ import annotations

import argparse
import json
from typing import Callable


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--json`` (print one JSON object instead of the table) and ``--json-out PATH``."""
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--json-out", metavar="PATH", help="also write the JSON object to PATH")


def emit(result: dict, args: argparse.Namespace, print_table: Callable[[dict], None]) -> None:
    """Write ``--json-out``, then print the JSON object (``--json``) or the table."""
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(result, handle, indent=1)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)


def parse_variants(specs: list[str]) -> dict[str, list[str]]:
    """``NAME=KEY=VALUE[,KEY=VALUE]`` -> {NAME: ["KEY=VALUE", ...]}."""
    variants = {}
    for spec in specs:
        name, sep, settings = spec.partition("=")
        if not sep or "=" not in settings:
            raise SystemExit(f"--variant {spec!r}: expected NAME=KEY=VALUE[,KEY=VALUE]")
        variants[name] = settings.split(",")
    return variants

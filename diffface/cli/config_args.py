"""The ``--config FILE`` and ``--set KEY=VALUE`` options shared by the commands that run a configured job."""

from __future__ import annotations

from pathlib import Path


def add_config_arguments(parser, config_name: str, saved_as: str, set_help: str) -> None:
    """Add ``--config`` (a YAML file of ``config_name`` settings) and repeatable ``--set`` (``args.overrides``)."""
    parser.add_argument("--config", type=Path, help=f"YAML file of {config_name} settings (e.g. a saved {saved_as})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=set_help)

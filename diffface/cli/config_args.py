"""The ``--config FILE`` and ``--set KEY=VALUE`` options shared by the commands that run a configured job."""

from __future__ import annotations

from pathlib import Path


def add_config_arguments(parser, config_name: str, saved_as: str, set_help: str) -> None:
    """Add ``--config`` (a YAML file of ``config_name`` settings) and repeatable ``--set`` (``args.overrides``)."""
    parser.add_argument("--config", type=Path, help=f"YAML file of {config_name} settings (e.g. a saved {saved_as})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=set_help)


def config_layers(args, options: dict, example: str = "key=value") -> list[tuple[dict, str]]:
    """The settings layers of a configured job, for ``YamlConfig.layered``: ``--config`` (when given), the
    command's options that were given (``None``: not given), then each ``--set`` item."""
    from diffface.config_io import parse_overrides, read_yaml_mapping

    layers = [(read_yaml_mapping(args.config), str(args.config))] if args.config else []
    layers.append(({k: v for k, v in options.items() if v is not None}, "options"))
    return layers + [(nested, "--set") for nested in parse_overrides(args.overrides, example)]

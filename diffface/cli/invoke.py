"""``diffface`` command lines as data: build one from option names checked against the command's own
argument definitions, show it as a shell line, and run it in this process, getting its ``--json`` figures.

What the demo runs is therefore exactly what its report tells a user to type."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
from typing import Any

from .main import build_parser


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            if command not in action.choices:
                raise ValueError(f"no diffface command {command!r}")
            return action.choices[command]
    raise ValueError("the diffface parser has no commands")


def command_line(command: str, *positional: Any, **options: Any) -> list[str]:
    """The argument list of ``diffface COMMAND POSITIONAL... OPTIONS...``; each option is named by its
    argparse destination (``annotations=``, ``overrides=[...]`` for ``--set``) and written with the option
    string the command defines: ``True`` a flag (``False`` omits it, or ``--no-x`` for a ``--x/--no-x``
    pair), a list repeats an append option or fills a multi-value one, ``None`` omits it.

    Raises:
        ValueError: naming an option the command does not define.

    Example:
        >>> command_line("fit", "S/images", out="F", landmarks="pts", overrides=["image_size=128"])
        ['fit', 'S/images', '--out', 'F', '--landmarks', 'pts', '--set', 'image_size=128']
    """
    sub = _subparser(build_parser(), command)
    by_dest = {a.dest: a for a in sub._actions if a.option_strings}
    argv = [command, *(str(p) for p in positional)]
    for name, value in options.items():
        if name not in by_dest:
            raise ValueError(f"diffface {command} has no option for {name!r}; it has "
                             f"{', '.join(sorted(d for d in by_dest if d != 'help'))}")
        action, flag = by_dest[name], by_dest[name].option_strings[-1]
        if value is None:
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            argv.append(next(s for s in action.option_strings if s.startswith("--no-") != bool(value)))
        elif isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if bool(value) == isinstance(action, argparse._StoreTrueAction):
                argv.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for item in value:
                argv += [flag, _word(item)]
        elif action.nargs in ("+", "*"):
            argv += [flag, *(_word(item) for item in value)]
        else:
            argv += [flag, _word(value)]
    return argv


def _word(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def shell_line(argv: list[str]) -> str:
    """``argv`` as a line to paste into a shell: ``diffface fit 'my photos' --out F``."""
    return shlex.join(["diffface", *argv])


def run_command(argv: list[str]) -> dict:
    """Run ``diffface ARGV --json`` in this process and return the figures it prints; its other output
    (progress bars, warnings) goes to stderr as usual.

    Raises:
        ValueError: ``argv`` does not parse; whatever the command raises; RuntimeError: it exited non-zero.
    """
    parser = build_parser()
    try:
        args = parser.parse_args([*argv, "--json"])
    except SystemExit as exc:  # argparse has printed its usage line to stderr
        raise ValueError(f"`{shell_line(argv)}` does not parse") from exc
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = int(args.func(args) or 0)
    if code:
        raise RuntimeError(f"`{shell_line(argv)}` exited with status {code}")
    lines = [line for line in printed.getvalue().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}

"""Command lines built from the commands' own argument definitions, shown as shell lines and run in-process."""

import shlex

import pytest

from diffface.cli.invoke import command_line, run_command, shell_line
from diffface.cli.main import build_parser


def test_options_take_the_commands_own_spelling():
    argv = command_line("fit", "my photos", out="F", landmarks="pts", workers=0, no_tensorboard=True,
                        retry_failed=False, overrides=["image_size=96", "texture.norm=l1"], batch_size=None)
    assert argv == ["fit", "my photos", "--out", "F", "--landmarks", "pts", "--workers", "0", "--no-tensorboard",
                    "--set", "image_size=96", "--set", "texture.norm=l1"]
    assert command_line("evaluate", compare=["a=A", "b=B"], out="E", scale=False, max_error=0.5) == [
        "evaluate", "--compare", "a=A", "b=B", "--out", "E", "--no-scale", "--max-error", "0.5"]
    args = build_parser().parse_args(argv)  # what the CLI itself makes of it
    assert args.input.name == "my photos" and args.overrides == ["image_size=96", "texture.norm=l1"]


def test_an_option_the_command_lacks_is_refused_by_name():
    with pytest.raises(ValueError, match="diffface fit has no option for 'steps'"):
        command_line("fit", "photos", steps=3)
    with pytest.raises(ValueError, match="no diffface command 'fitt'"):
        command_line("fitt")


def test_shell_line_quotes_and_run_command_returns_the_json_figures(tmp_path):
    argv = command_line("synth", out=tmp_path / "a b", n=2, seed=3, image_size=64, subdivision_levels=0)
    line = shell_line(argv)
    assert shlex.split(line) == ["diffface", *argv]
    figures = run_command(argv)
    assert figures["faces"] == 2 and len(list((tmp_path / "a b" / "images").glob("*.png"))) == 2
    with pytest.raises(ValueError, match="does not parse"):
        run_command(["synth", "--n", "2"])  # --out is required

import json
import subprocess
import sys

import pytest

from diffface.cli.main import COMMANDS, build_parser, main


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert "usage: diffface " + command in capsys.readouterr().out


def test_python_dash_m_works():
    result = subprocess.run([sys.executable, "-m", "diffface", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "convert-model" in result.stdout


def test_model_info_builtin_json(capsys):
    assert main(["model-info", "builtin", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["landmarks"] == 68 and info["vertices"] >= 5000
    assert (info["id_dims"], info["exp_dims"], info["tex_dims"]) == (80, 29, 80)
    assert info["faces"] > 0


def test_convert_builtin_then_info(tmp_path, capsys):
    out = tmp_path / "builtin.npz"
    assert main(["convert-model", "builtin", "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    assert main(["model-info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["vertices"] >= 5000 and info["landmarks"] == 68


def test_convert_shared_surrey_model(shared_data, tmp_path, capsys):
    out = tmp_path / "sfm.npz"
    assert main(["convert-model", str(shared_data / "sfm" / "sfm_3448.npz"), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["model-info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == {**info, "vertices": 3448, "faces": 6736, "id_dims": 63, "exp_dims": 6, "tex_dims": 0,
                    "landmarks": 68}


def test_bad_model_file_gives_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "broken.npz"
    bad.write_bytes(b"garbage")
    assert main(["model-info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "broken.npz" in err and "Traceback" not in err


def test_demo_rejects_bad_settings_in_one_line(tmp_path, capsys):
    # the demo itself runs end to end in tests/test_demo.py; here: a bad size is one clear line
    assert main(["demo", "--out", str(tmp_path / "demo"), "--quick", "--steps", "0"]) == 2
    err = capsys.readouterr().err
    assert "train_steps must be at least 1" in err and "Traceback" not in err
    assert not (tmp_path / "demo").exists()


def test_demo_settings_layer_like_every_job(tmp_path):
    """defaults (or --quick's) < --config (a saved config.json) < options < --set, as fit, build-dataset and
    train do; a wrong type names the layer and the key."""
    from dataclasses import asdict

    from diffface.app.demo_config import DemoConfig
    from diffface.cli.demo import resolve_config

    saved = tmp_path / "config.json"
    saved.write_text(json.dumps(asdict(DemoConfig(train_faces=100, lr=1e-3, seed=4))))
    parse = build_parser().parse_args
    config = resolve_config(parse(["demo", "--config", str(saved), "--seed", "5", "--set", "lr=2e-3",
                                   "--set", "export_formats=torchscript"]))
    assert (config.train_faces, config.seed, config.lr, config.export_formats) == (100, 5, 2e-3, ("torchscript",))
    assert resolve_config(parse(["demo", "--quick", "--set", "train_steps=3"])) == DemoConfig.quick(train_steps=3)
    with pytest.raises(ValueError, match="--set: train_steps: expected an integer"):
        resolve_config(parse(["demo", "--set", "train_steps=many"]))


def test_convert_eos_bin_with_blendshapes_passes_options(shared_data, optional_import, tmp_path, capsys):
    optional_import("eos", 'pip install "diffface[eos]"  (or: pip install eos-py)')
    sfm = shared_data / "sfm"
    out = tmp_path / "eos.npz"
    assert main(["convert-model", str(sfm / "sfm_shape_3448.bin"), "--expression",
                 str(sfm / "expression_blendshapes_3448.bin"), "--out", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["exp_dims"] == 6 and info["id_dims"] == 63 and info["landmarks"] == 68


def test_option_that_does_not_apply_is_refused(shared_data, tmp_path, capsys):
    code = main(["convert-model", str(shared_data / "sfm" / "sfm_3448.npz"), "--triangles", "tri.pkl",
                 "--out", str(tmp_path / "x.npz")])
    assert code == 2
    assert "triangles" in capsys.readouterr().err

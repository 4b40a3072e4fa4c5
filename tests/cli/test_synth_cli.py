import json

import numpy as np
import pytest
from PIL import Image

from diffface.cli.main import main
from diffface.landmark_io import read_pts


def test_synth_writes_a_benchmark_and_prints_its_summary(tmp_path, capsys):
    out = tmp_path / "S"
    assert main(["synth", "--n", "3", "--image-size", "64", "--seed", "3", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["faces"] == 3 and summary["image_size"] == 64
    assert summary["mesh_vertices"] > summary["model_vertices"] and summary["mesh_faces"] != summary["model_faces"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["scene"]["seed"] == 3 and len(manifest["samples"]) == 3
    for sample in manifest["samples"]:
        assert np.asarray(Image.open(out / sample["image"])).shape == (64, 64, 3)
        assert read_pts(out / sample["landmarks"]).shape == (68, 2)
        assert (out / sample["mesh"]).stat().st_size > 0 and (out / sample["landmarks_3d"]).is_file()
    assert np.load(out / "params.npz")["params"].shape[0] == 3


def test_synth_bad_arguments_give_one_clear_line(tmp_path, capsys):
    assert main(["synth", "--n", "0", "--out", str(tmp_path / "S")]) == 2
    err = capsys.readouterr().err
    assert "--n" in err and "Traceback" not in err
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["synth", "--n", "1", "--image-size", "32", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and str(tmp_path) in err
    assert (tmp_path / "mine.txt").read_text() == "keep"


def test_landmark_error_options_reach_the_pts_files(tmp_path, capsys):
    """--landmark-noise 0 writes the true projections; the detector-like options raise the recorded
    inter-ocular error, the faces themselves unchanged; a negative σ is one clear line."""
    runs = {}
    for name, options in (("exact", ["--landmark-noise", "0"]),
                          ("detector", ["--landmark-offset", "3", "--landmark-scale", "0.04", "--contour-slide", "4"])):
        out = tmp_path / name
        assert main(["synth", "--n", "2", "--image-size", "96", "--seed", "4", "--subdivision-levels", "0",
                     "--out", str(out), "--json", *options]) == 0
        runs[name] = (out, json.loads(capsys.readouterr().out)["landmark_error_interocular_mean"])
    (exact, zero), (detector, error) = runs["exact"], runs["detector"]
    stored = np.load(exact / "params.npz")
    np.testing.assert_array_equal(stored["landmarks_2d"], stored["landmarks_2d_clean"])
    assert zero < 1e-5 and error > 0.05
    assert json.loads((detector / "manifest.json").read_text())["landmarks"]["contour_slide_px"] == 4.0
    assert (Image.open(exact / "images/face_0000.png").tobytes() == Image.open(detector / "images/face_0000.png")
            .tobytes())
    assert main(["synth", "--n", "1", "--landmark-noise", "-1", "--out", str(tmp_path / "bad")]) == 2
    assert "--landmark-noise must not be negative" in capsys.readouterr().err


def test_synth_sequences_write_one_folder_per_subject(tmp_path, capsys):
    out = tmp_path / "SEQ"
    assert main(["synth", "--sequences", "2", "--frames", "3", "--static-sequences", "0", "--image-size", "48",
                 "--subdivision-levels", "0", "--seed", "2", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["sequences"], summary["frames"], summary["images"], summary["static_sequences"]) == (2, 3, 6, 0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["motion"] for s in manifest["sequences"]] == ["moving", "moving"]
    scene = manifest["config"]["render"]["scene"]
    assert scene["seed"] == 2 and scene["image_size"] == 48
    assert sorted(p.name for p in (out / "images/seq_001").iterdir())[-1] == "seq_001_f0002.pts"
    assert (out / "meshes/seq_001_f0002.obj").is_file() and len(list((out / "meshes").iterdir())) == 12
    assert np.load(out / "params.npz")["frame"].tolist() == [0, 1, 2, 0, 1, 2]


def test_synth_sequence_options_refused_where_they_do_not_apply(tmp_path, capsys):
    with pytest.raises(SystemExit):  # argparse: --n and --sequences are exclusive
        main(["synth", "--n", "3", "--sequences", "2", "--out", str(tmp_path / "S")])
    assert "not allowed with argument" in capsys.readouterr().err
    for options, message in ((["--frames", "3"], "--frames and --static-sequences apply to --sequences"),
                             (["--sequences", "2", "--static-sequences", "3"], "--static-sequences must be"),
                             (["--sequences", "2", "--frames", "0"], "--frames must be at least 1")):
        assert main(["synth", *options, "--out", str(tmp_path / "S")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "S").exists()


def test_synth_option_defaults_are_the_configs():
    """Written out in the parser (so `diffface --help` does not import the generator): they must be the configs'."""
    from diffface.app.synth import SceneConfig
    from diffface.app.synth_benchmark import SynthBenchmarkConfig
    from diffface.cli.main import build_parser

    args = build_parser().parse_args(["synth", "--out", "S"])
    scene, config = SceneConfig(), SynthBenchmarkConfig()
    assert (args.landmark_noise, args.landmark_offset, args.landmark_scale, args.contour_slide) == (
        scene.landmark_noise_px, scene.landmark_offset_px, scene.landmark_scale, scene.contour_slide_px)
    assert (args.subdivision_levels, args.batch_size) == (config.subdivision_levels, config.batch_size)
    assert args.n == config.num_faces and args.sequences is None and args.frames is None


def test_synth_sequence_option_defaults_are_the_config():
    from diffface.app.synth_benchmark import SynthBenchmarkConfig
    from diffface.app.synth_sequences import SequenceConfig
    from diffface.cli.main import build_parser
    from diffface.cli.synth import SEQUENCE_FRAMES

    sequences, frame = SequenceConfig(), SynthBenchmarkConfig()
    assert SEQUENCE_FRAMES == sequences.frames
    assert build_parser().parse_args(["synth", "--out", "S"]).static_sequences == sequences.static_sequences
    # the options a sequence shares with the single-face benchmark have the same defaults there
    for name in ("subdivision_levels", "batch_size", "model", "device", "scene"):
        assert getattr(sequences.render, name) == getattr(frame, name), name

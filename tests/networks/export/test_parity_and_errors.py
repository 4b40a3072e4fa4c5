"""The parity check fails loudly; bad checkpoints and missing backends give clear errors."""

import sys

import pytest
import torch

from diffface.networks import CheckpointError
from diffface.networks.export import (BackendUnavailable, ExportConfig, ParityError, Runner, TOLERANCES, compare,
                                      export_checkpoint, face_crops, make_deployable)


def test_parity_error_reports_the_worst_output(regressor):
    deployable = make_deployable(regressor)
    off_by_a_bit = Runner(lambda x: (deployable(x)[0] + 0.05,), None, "perturbed")
    report = compare(off_by_a_bit, deployable, {"random": deployable.example_input(2)}, "onnx", TOLERANCES["onnx"])
    assert not report.passed and report.max_abs_error == pytest.approx(0.05, rel=1e-3)
    with pytest.raises(ParityError, match=r"params on random inputs has max abs error 5.0\d*e-02 > tolerance"):
        report.raise_if_failed()
    exact = Runner(lambda x: deployable(x), None, "eager again")
    assert compare(exact, deployable, {"random": deployable.example_input(2)}, "onnx", TOLERANCES["onnx"]).passed


def test_static_batch_runner_pads_the_last_chunk():
    seen = []

    def run(x):
        seen.append(x.shape[0])
        return (x.flatten(1).sum(1, keepdim=True),)

    x = torch.rand(5, 3, 4, 4)
    (out,) = Runner(run, 2, "static 2")(x)
    assert seen == [2, 2, 2] and out.shape == (5, 1)
    torch.testing.assert_close(out, x.flatten(1).sum(1, keepdim=True))


def test_real_face_crop(face_image):
    crops = face_crops([face_image])
    assert crops.shape == (1, 3, 96, 96) and 0 <= float(crops.min()) and float(crops.max()) <= 1
    assert float(crops.std()) > 0.05  # a face, not padding


def test_image_without_landmarks(tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32)).save(tmp_path / "face.png")
    with pytest.raises(FileNotFoundError, match="no landmark annotation"):
        face_crops([tmp_path / "face.png"])


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        export_checkpoint(tmp_path / "absent.pt", tmp_path / "m.pt", ExportConfig("torchscript"))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pt: not a readable checkpoint"):
        export_checkpoint(corrupt, tmp_path / "m.pt", ExportConfig("torchscript"))


@pytest.mark.parametrize("format_name, module, hint", [
    ("onnx", "onnx", 'pip install "diffface[export]"'),
    ("executorch", "executorch", 'pip install "diffface[executorch]"'),
])
def test_missing_backend_names_the_install_command(checkpoint, tmp_path, monkeypatch, format_name, module, hint):
    for name in [m for m in list(sys.modules) if m.startswith(module + ".")] + [module]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(BackendUnavailable, match=f"{module}.*install it with: {hint}".replace("[", r"\[").replace("]", r"\]")):
        export_checkpoint(checkpoint, tmp_path / "m.bin", ExportConfig(format_name), parity=False)

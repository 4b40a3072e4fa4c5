"""The parity check fails loudly; bad checkpoints and missing backends give clear errors."""

import copy
import sys

import pytest
import torch

from diffface.networks import CheckpointError
from diffface.networks.export import (BackendUnavailable, ExportConfig, ParityError, Runner, TOLERANCES, compare,
                                      export_checkpoint, face_crops, make_deployable)


def perturbed(deployable, group: str, amount: float, index: int = 0) -> Runner:
    """A runner returning eager's parameters with ``amount`` added to entry ``index`` of ``group``."""
    position = deployable.layout.slices[group].start + index

    def run(x):
        params = deployable(x)[0].clone()
        params[:, position] += amount
        return (params,)

    return Runner(run, None, f"{group} + {amount:g}")


def old_scaled_bound(deployable, atol: float, rtol: float) -> float:
    """The bound before each group had its own: ``atol + rtol · max|params|`` (translation ~600 mm)."""
    return atol + rtol * float(deployable(deployable.example_input(2))[0].abs().max())


def test_parity_error_reports_the_worst_group(regressor):
    deployable = make_deployable(regressor)
    crops = {"random": deployable.example_input(2)}
    # 1e-3 rad on the yaw passed the old fp32 bound (1e-4 + 1e-5 x 600 mm); angles are now bounded in rad
    assert 1e-3 < old_scaled_bound(deployable, 1e-4, 1e-5)
    report = compare(perturbed(deployable, "angles", 1e-3, 1), deployable, crops, "onnx", TOLERANCES["onnx"])
    assert not report.passed and report.worst.group == "angles" and report.worst.unit == "rad"
    assert report.worst.max_abs_error == pytest.approx(1e-3, rel=1e-3)
    assert [r.group for r in report.results if not r.passed] == ["angles"]
    with pytest.raises(ParityError, match=r"angles \(params\) on random inputs has max abs error 1.0\d*e-03 rad > "
                                          r"tolerance 1.000e-04 rad"):
        report.raise_if_failed()
    assert report.to_dict()["worst"]["group"] == "angles" and "worst: angles" in report.table()
    exact = Runner(lambda x: deployable(x), None, "eager again")
    assert compare(exact, deployable, crops, "onnx", TOLERANCES["onnx"]).passed


def test_fp16_bound_no_longer_accepts_radians_of_error(regressor):
    deployable = make_deployable(regressor)
    crops = {"random": deployable.example_input(2)}
    # the old fp16 bound, 1e-2 + 1e-2 x 600 mm, accepted 0.5 rad (29 degrees) on the pitch
    assert 0.5 < old_scaled_bound(deployable, 1e-2, 1e-2)
    report = compare(perturbed(deployable, "angles", 0.5), deployable, crops, "tensorrt-fp16",
                     TOLERANCES["tensorrt-fp16"])
    assert not report.passed and report.worst.group == "angles"
    # while 1 mm on the 600 mm translation stays inside the fp16 engine's bound
    assert compare(perturbed(deployable, "translation", 1.0, 2), deployable, crops, "tensorrt-fp16",
                   TOLERANCES["tensorrt-fp16"]).passed


def test_coefficients_are_bounded_in_sigma_units(regressor, builtin_model):
    deployable = make_deployable(regressor)
    assert "prior sigma" in deployable.coefficient_std_source
    sigma = float(builtin_model.exp_std[3])
    torch.testing.assert_close(deployable.coefficient_std[builtin_model.id_dims + 3], builtin_model.exp_std[3])
    crops = {"random": deployable.example_input(2)}
    bound = TOLERANCES["onnx"].coefficients_sigma
    inside = compare(perturbed(deployable, "alpha_exp", 0.5 * bound * sigma, 3), deployable, crops, "onnx",
                     TOLERANCES["onnx"])
    outside = compare(perturbed(deployable, "alpha_exp", 2 * bound * sigma, 3), deployable, crops, "onnx",
                      TOLERANCES["onnx"])
    assert inside.passed and not outside.passed and outside.worst.group == "alpha_exp"
    assert outside.worst.max_abs_error == pytest.approx(2 * bound, rel=1e-3)


def test_sigma_falls_back_to_the_normalisation_without_the_model_file(regressor):
    from dataclasses import replace

    elsewhere = copy.copy(regressor)
    elsewhere.model_identity = replace(regressor.model_identity, spec="/nonexistent/bfm.npz")
    deployable = make_deployable(elsewhere)
    assert "training split" in deployable.coefficient_std_source and "bfm.npz" in deployable.coefficient_std_source
    layout = regressor.layout
    torch.testing.assert_close(deployable.coefficient_std,
                               regressor.normalizer.std[:layout.slices["alpha_exp"].stop].float())


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


def test_one_registry_describes_every_format():
    from diffface.networks.export import EXPORT_FORMATS, FORMAT_IO, FORMATS, REQUIRES, SUFFIXES
    from diffface.networks.export.bench import BENCH_FORMATS

    assert set(FORMAT_IO) == set(EXPORT_FORMATS) == set(FORMATS) == set(SUFFIXES)
    assert BENCH_FORMATS == ("eager", *FORMATS) and set(REQUIRES) == {"onnx", "executorch", "tensorrt"}
    for name, spec in EXPORT_FORMATS.items():
        assert spec.tolerance == TOLERANCES[name] and ExportConfig(format=name).default_path("m.pt").suffix == spec.suffix

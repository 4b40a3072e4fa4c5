"""TorchScript (.pt) and TorchScript-mobile (.ptl): parity on random and real crops, loading in the runtime."""

import pytest
import torch

from diffface.networks.export import ExportConfig, export_checkpoint, load_exported
from diffface.networks.export.torchscript import xnnpack_enabled


@pytest.mark.parametrize("format_name", ["torchscript", "mobile"])
def test_parity_random_and_real(format_name, checkpoint, face_image, tmp_path):
    out = tmp_path / f"model.{format_name}"
    result = export_checkpoint(checkpoint, out, ExportConfig(format_name), real_images=[face_image])
    report = result.parity
    assert report.passed and {r.inputs for r in report.results} == {"random", "real"}
    assert report.max_abs_error <= 1e-3
    assert result.size_bytes < 1.6e6


def test_files_load_in_their_runtimes(checkpoint, tmp_path):
    from torch.jit.mobile import _load_for_lite_interpreter

    export_checkpoint(checkpoint, tmp_path / "m.pt", ExportConfig("torchscript"), parity=False)
    result = export_checkpoint(checkpoint, tmp_path / "m.ptl", ExportConfig("mobile"), parity=False)
    x = torch.rand(5, 3, 96, 96)  # any batch
    assert torch.jit.load(str(tmp_path / "m.pt"))(x).shape == (5, 118)
    assert _load_for_lite_interpreter(str(tmp_path / "m.ptl"))(x).shape == (5, 118)
    if not xnnpack_enabled():  # the CPU wheel of torch 2.13: the report says the optimisation was skipped
        assert any("optimize_for_mobile not applied" in note and "XNNPACK" in note for note in result.notes)


def test_with_mesh_outputs_vertices(checkpoint, builtin_model, tmp_path):
    result = export_checkpoint(checkpoint, tmp_path / "mesh.ptl", ExportConfig("mobile", with_mesh=True),
                               morphable_model=builtin_model)
    assert result.parity.passed and {r.output for r in result.parity.results} == {"params", "vertices"}
    params, vertices = load_exported(result.path, result.config)(torch.rand(2, 3, 96, 96))
    groups = builtin_model.layout.unpack(params)
    torch.testing.assert_close(vertices, builtin_model.shape(groups.alpha_id, groups.alpha_exp), atol=1e-4, rtol=1e-5)

"""ExecuTorch (.pte, XNNPACK delegate) run through executorch's Python runtime."""

import torch

from diffface.networks.export import ExportConfig, export_checkpoint, load_exported


def test_pte_parity_random_and_real_with_mesh(optional_import, checkpoint, builtin_model, face_image, tmp_path):
    optional_import("executorch.runtime", 'pip install "diffface[executorch]"  (executorch==1.5.1)')
    result = export_checkpoint(checkpoint, tmp_path / "model.pte", ExportConfig("executorch", with_mesh=True),
                               real_images=[face_image], morphable_model=builtin_model)
    report = result.parity
    assert report.passed and report.runtime.startswith("executorch")
    assert {(r.inputs, r.output) for r in report.results} == {(i, o) for i in ("random", "real")
                                                               for o in ("params", "vertices")}
    assert any("0 op(s) outside" in note for note in result.notes)  # the whole graph runs in XNNPACK
    runner = load_exported(result.path, result.config)
    assert runner.batch == 1
    params, vertices = runner(torch.rand(2, 3, 96, 96))
    assert params.shape == (2, 118) and vertices.shape == (2, builtin_model.num_vertices, 3)

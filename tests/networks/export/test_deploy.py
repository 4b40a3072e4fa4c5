"""The deployable module every exporter starts from: folding, the mesh head, the export recipe."""

import pytest
import torch
from torch import nn

from diffface.networks import FaceRegressor, ModelIdentity
from diffface.networks.export import (ExportConfig, MeshHead, Tolerance, fold_normalizer, make_deployable,
                                      parameter_graph)
from diffface.networks.export.deploy import calibrate_batchnorm, fresh_regressor
from diffface.params import ParamNormalizer


def test_folded_graph_computes_the_checkpoints_function(regressor):
    deployable = make_deployable(regressor)
    x = deployable.example_input(3)
    (params,) = deployable(x)
    with torch.no_grad():
        reference = regressor(x)  # BatchNorm unfolded, normaliser applied after the network
    assert params.shape == (3, 118)
    torch.testing.assert_close(params, reference, atol=1e-3, rtol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployable.module.modules())
    assert deployable.output_names == ("params",) and len(deployable.param_names) == 118


def test_fold_normalizer_is_denormalize_of_the_linear_layer():
    torch.manual_seed(0)
    linear = nn.Linear(5, 3)
    normalizer = ParamNormalizer(torch.tensor([600.0, -1.0, 2.0]), torch.tensor([20.0, 0.5, 0.0]))
    x = torch.randn(4, 5)
    torch.testing.assert_close(fold_normalizer(linear, normalizer)(x), normalizer.denormalize(linear(x)))
    with pytest.raises(ValueError, match="3 outputs, the normaliser 2"):
        fold_normalizer(linear, ParamNormalizer(torch.zeros(2), torch.ones(2)))


def test_mesh_head_gives_the_morphable_models_shape(regressor, builtin_model):
    deployable = make_deployable(regressor, with_mesh=True, morphable_model=builtin_model)
    params, vertices = deployable(deployable.example_input(2))
    groups = regressor.layout.unpack(params)
    expected = builtin_model.shape(groups.alpha_id, groups.alpha_exp)
    assert vertices.shape == (2, builtin_model.num_vertices, 3)
    torch.testing.assert_close(vertices, expected, atol=1e-4, rtol=1e-5)
    assert deployable.output_names == ("params", "vertices")


def test_mesh_head_loads_the_model_the_checkpoint_names(regressor):
    deployable = make_deployable(regressor, with_mesh=True)  # spec "builtin", fingerprint checked
    assert deployable.module.mesh.basis_t.shape == (109, 3 * 6561)


def test_mesh_head_rejects_another_model(regressor, tiny_model_data):
    from diffface.morphable_model import MorphableModel

    tiny = MorphableModel(tiny_model_data)
    with pytest.raises(ValueError, match="does not match the morphable model"):
        MeshHead(tiny, regressor.layout)
    with pytest.raises(ValueError, match="morphable model 'tiny' has fingerprint"):
        make_deployable(regressor, with_mesh=True, morphable_model=tiny)
    wrong = FaceRegressor(regressor.network, regressor.normalizer, regressor.layout,
                          ModelIdentity("builtin", "0" * 16, "builtin"), "mobileface", {}, 96)
    with pytest.raises(ValueError, match="fingerprint"):
        make_deployable(wrong, with_mesh=True)


def test_only_networks_with_an_export_recipe():
    with pytest.raises(ValueError, match="no export recipe for network Linear"):
        parameter_graph(nn.Linear(3, 118), ParamNormalizer(torch.zeros(118), torch.ones(118)))


def test_fresh_regressor_for_the_benchmark():
    regressor = fresh_regressor(width=4)
    assert regressor(torch.rand(1, 3, 96, 96)).shape == (1, 118)
    assert regressor.network_config == {"width": 4, "num_outputs": 118}


@pytest.mark.parametrize("source", ["fresh", "fixture"])
def test_untrained_networks_depend_on_the_input(source, regressor):
    """Parity checks on an untrained network test its convolutions only if its outputs vary with the image:
    with BatchNorm at its initial (0, 1) statistics MobileFace's spread across inputs is ~1e-9."""
    network = (fresh_regressor() if source == "fresh" else regressor).network
    with torch.no_grad():
        outputs = network(torch.rand(8, 3, 96, 96, generator=torch.Generator().manual_seed(2)))
    assert float(outputs.std(0).mean()) > 0.05
    assert not network.training


def test_calibrate_batchnorm_sets_the_batch_statistics():
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    images = torch.rand(6, 3, 8, 8) * 5 + 2
    calibrate_batchnorm(network, images)
    features = network[0](images)
    norm = network[1]
    assert torch.allclose(norm.running_mean, features.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(norm.running_var, features.var((0, 2, 3)), rtol=1e-4)  # unbiased, as in training
    assert norm.momentum == 0.1 and not network.training


def test_config_checks_and_tolerances():
    with pytest.raises(ValueError, match="unknown export format 'coreml'"):
        ExportConfig("coreml")
    with pytest.raises(ValueError, match="TensorRT engines only"):
        ExportConfig("onnx", fp16=True)
    with pytest.raises(ValueError, match="batch_size"):
        ExportConfig("onnx", batch_size=0)
    assert ExportConfig("tensorrt", fp16=True).tolerance_key == "tensorrt-fp16"
    tolerance = Tolerance(angles_rad=1.0, coefficients_sigma=2.0, translation_mm=3.0, camera_px=4.0, vertices_mm=5.0)
    assert [tolerance.bound(g) for g in ("angles", "alpha_id", "alpha_exp", "translation", "focal",
                                         "principal_point", "vertices")] == [1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 5.0]
    with pytest.raises(ValueError, match="no parity bound for output group 'sh'"):
        tolerance.bound("sh")
    assert ExportConfig("mobile").default_path("run/model.pt").name == "model.ptl"

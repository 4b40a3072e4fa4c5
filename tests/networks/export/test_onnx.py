"""ONNX run with onnxruntime: parity, onnx.checker, and what TensorRT's ONNX parser needs."""

import pytest
import torch

from diffface.networks.export import (DEFAULT_OPSET, TENSORRT_ONNX_OPS, TENSORRT_OPSETS, ExportConfig,
                                      check_onnx_for_tensorrt, export_checkpoint, load_exported)
from diffface.networks.export.onnx import onnx_summary


@pytest.fixture(scope="module")
def onnx_modules(optional_import):
    optional_import("onnxscript", 'pip install "diffface[export]"')
    return (optional_import("onnx", 'pip install "diffface[export]"'),
            optional_import("onnxruntime", 'pip install "diffface[export]"'))


@pytest.fixture(scope="module")
def exported(onnx_modules, checkpoint, builtin_model, face_image, tmp_path_factory):
    """name -> ExportResult: static batch 1, with the mesh, dynamic batch, and opset 17 (legacy exporter)."""
    folder = tmp_path_factory.mktemp("onnx")
    configs = {"static": ExportConfig("onnx"), "mesh": ExportConfig("onnx", with_mesh=True),
               "dynamic": ExportConfig("onnx", dynamic_batch=True), "opset17": ExportConfig("onnx", opset=17)}
    return {name: export_checkpoint(checkpoint, folder / f"{name}.onnx", config, real_images=[face_image],
                                    morphable_model=builtin_model) for name, config in configs.items()}


@pytest.mark.parametrize("name", ["static", "mesh", "dynamic", "opset17"])
def test_parity_random_and_real(exported, name):
    report = exported[name].parity
    assert report.passed and {r.inputs for r in report.results} == {"random", "real"}
    assert report.runtime.startswith("onnxruntime")
    assert report.max_abs_error <= 1e-3
    groups = {"alpha_id", "alpha_exp", "translation", "angles", "focal", "principal_point"}
    assert {r.group for r in report.results} == groups | ({"vertices"} if name == "mesh" else set())
    assert {r.unit for r in report.results if r.group == "angles"} == {"rad"}


def test_checker_opset_and_operators(exported):
    summary = onnx_summary(exported["static"].path)  # runs onnx.checker (full check)
    assert summary["opset"] == DEFAULT_OPSET in TENSORRT_OPSETS
    assert set(summary["ops"]) <= {"Conv", "Relu", "ReduceMean", "GlobalAveragePool", "Reshape", "Flatten", "Gemm"}
    assert set(summary["ops"]) <= TENSORRT_ONNX_OPS
    assert summary["inputs"] == {"images": [1, 3, 96, 96]} and summary["outputs"]["params"][-1] == 118
    assert onnx_summary(exported["opset17"].path)["opset"] == 17
    assert exported["static"].size_bytes < 1.5e6  # 365,538 float32 weights and the graph


@pytest.mark.parametrize("name", ["static", "mesh", "opset17"])
def test_tensorrt_parser_would_accept_the_graph(exported, name):
    assert check_onnx_for_tensorrt(exported[name].path, require_static=True) == []


def test_dynamic_batch_is_flagged_where_tensorrt_needs_static_shapes(exported):
    problems = check_onnx_for_tensorrt(exported["dynamic"].path, require_static=True)
    assert len(problems) == 1 and "dynamic shape ['batch', 3, 96, 96]" in problems[0]
    assert check_onnx_for_tensorrt(exported["dynamic"].path, require_static=False) == []
    runner = load_exported(exported["dynamic"].path, exported["dynamic"].config)
    assert runner.batch is None and runner(torch.rand(7, 3, 96, 96))[0].shape == (7, 118)


def test_unsupported_operator_opset_and_type_are_reported(onnx_modules, tmp_path):
    onnx, _ = onnx_modules
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Bernoulli", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["n", 4])])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)]), str(path))
    problems = " | ".join(check_onnx_for_tensorrt(path))
    assert "opset 22 outside TensorRT's 9..20" in problems
    assert "operators TensorRT's ONNX parser lacks: ['Bernoulli']" in problems
    assert "x is DOUBLE, not FLOAT" in problems and "dynamic shape ['n', 4]" in problems


def test_static_runner_chunks_any_number_of_images(exported):
    runner = load_exported(exported["static"].path, exported["static"].config)
    assert runner.batch == 1
    params = runner(torch.rand(3, 3, 96, 96))[0]
    assert params.shape == (3, 118)

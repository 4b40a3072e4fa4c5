"""TensorRT: the engine cache and the choice of precision API everywhere; engines themselves only where
``tensorrt`` imports and a GPU exists.

The PyPI ``tensorrt`` wheels are placeholders that download the library from NVIDIA's index at install
time (unreachable here), and the lent GPU machines have no TensorRT: the engine test skips with that reason.
The precision settings of TensorRT 10 (``BuilderFlag.FP16``) and 11 (strongly typed, fp16 graph) are tested
against a fake ``tensorrt`` module that records what the builder is asked for.
"""

import sys

import pytest
import torch

from diffface.networks import load_checkpoint
from diffface.networks.export import BackendUnavailable, ExportConfig, backend_available, export_checkpoint
from diffface.networks.export import check_onnx_for_tensorrt, make_deployable
from diffface.networks.export.tensorrt import cached_build, engine_cache_key, model_fingerprint

TENSORRT_OK, TENSORRT_REASON = backend_available("tensorrt")


@pytest.mark.cuda
@pytest.mark.skipif(not (TENSORRT_OK and torch.cuda.is_available()),
                    reason=f"needs TensorRT and a CUDA GPU: {TENSORRT_REASON or 'no CUDA GPU'} (the PyPI tensorrt "
                           "wheels are placeholders fetching from NVIDIA's index, unreachable here)")
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_engine_parity_and_cache(checkpoint, face_image, tmp_path, fp16):
    config = ExportConfig("tensorrt", fp16=fp16, engine_cache=str(tmp_path / "cache"))
    first = export_checkpoint(checkpoint, tmp_path / "a.engine", config, real_images=[face_image])
    second = export_checkpoint(checkpoint, tmp_path / "b.engine", config, real_images=[face_image])
    assert first.parity.passed and second.parity.passed
    assert "built and cached" in first.notes[-1] and "from cache" in second.notes[-1]
    assert (tmp_path / "a.engine").read_bytes() == (tmp_path / "b.engine").read_bytes()


def test_cache_key_covers_precision_shapes_version_and_gpu():
    base = dict(model_bytes=b"onnx", config=ExportConfig("tensorrt"), input_shape=(1, 3, 96, 96),
                backend="onnx-parser", tensorrt_version="10.3.0", device_name="H100")
    key = engine_cache_key(**base)
    variants = [dict(model_bytes=b"onnx2"), dict(config=ExportConfig("tensorrt", fp16=True)),
                dict(input_shape=(8, 3, 96, 96)), dict(config=ExportConfig("tensorrt", dynamic_batch=True)),
                dict(tensorrt_version="10.4.0"), dict(device_name="A100"), dict(backend="torch2trt")]
    keys = {engine_cache_key(**{**base, **change}) for change in variants}
    assert key not in keys and len(keys) == len(variants)
    assert engine_cache_key(**base) == key


def test_model_fingerprint_follows_the_weights(regressor):
    first, second = make_deployable(regressor), make_deployable(regressor)
    assert model_fingerprint(first) == model_fingerprint(second) != model_fingerprint(first, "opset 17")
    with torch.no_grad():
        second.module.body[-1].bias[0] += 1e-3
    assert model_fingerprint(first) != model_fingerprint(second)


def test_cached_build_builds_once(tmp_path):
    calls = []

    def build() -> bytes:
        calls.append(1)
        return b"engine bytes"

    assert cached_build(str(tmp_path), "k", build)[0] == b"engine bytes"
    engine, note = cached_build(str(tmp_path), "k", build)
    assert engine == b"engine bytes" and "from cache" in note and len(calls) == 1
    assert cached_build(None, "k", build)[1] == "engine cache off" and len(calls) == 2


@pytest.mark.parametrize("backend, package", [("onnx-parser", "pip install tensorrt"),
                                              ("torch-tensorrt", "pip install torch-tensorrt"),
                                              ("torch2trt", "git+https://github.com/NVIDIA-AI-IOT/torch2trt")])
def test_missing_tensorrt_names_the_package(checkpoint, tmp_path, backend, package, monkeypatch):
    for module in ("tensorrt", "torch_tensorrt", "torch2trt"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed, here and where it is
    with pytest.raises(BackendUnavailable, match=package.replace("+", r"\+")):
        export_checkpoint(checkpoint, tmp_path / "m.engine", ExportConfig("tensorrt", tensorrt_backend=backend))


# --- which precision API: a fake ``tensorrt`` module records what the builder was asked for ----------------------
class FakeLayer:
    def __init__(self, layer_type):
        self.type, self.precision, self.num_outputs, self.output_types = layer_type, None, 1, {}

    def set_output_type(self, index, dtype):
        self.output_types[index] = dtype


class FakeNetwork:
    def __init__(self, flags, layer_types):
        self.flags, self.layers = flags, [FakeLayer(t) for t in layer_types]
        self.num_layers = len(self.layers)

    def get_layer(self, index):
        return self.layers[index]


class FakeBuilderConfig:
    def __init__(self):
        self.flags, self.pools = [], {}

    def set_flag(self, flag):
        self.flags.append(flag)

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool] = size


def fake_tensorrt(version: str, layer_types=("CONVOLUTION", "ACTIVATION", "REDUCE", "SHUFFLE", "MATRIX_MULTIPLY",
                                                "CONSTANT", "ELEMENTWISE")):
    """A stand-in for ``import tensorrt`` with the API of TensorRT ``version`` (10.x: ``BuilderFlag.FP16`` and the
    precision-constraint flags; 11.x: neither, networks strongly typed) that records every builder call."""
    import enum
    import importlib.machinery
    import types

    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # torch.export looks modules up by spec
    trt.__version__ = version
    trt.float32, trt.float16 = "float32", "float16"
    builder_flags = ["TF32", "REFIT"] + (["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"] if major <= 10 else [])
    trt.BuilderFlag = enum.Enum("BuilderFlag", builder_flags)
    creation = ["EXPLICIT_BATCH", "STRONGLY_TYPED"] if major <= 10 else ["STRONGLY_TYPED", "PREFER_AOT_PYTHON_PLUGINS"]
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", creation, start=0)
    trt.LayerType = enum.Enum("LayerType", ["CONVOLUTION", "ACTIVATION", "REDUCE", "SHUFFLE", "MATRIX_MULTIPLY",
                                            "CONSTANT", "ELEMENTWISE", "SLICE"])
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE"])
    trt.built = {}

    class Logger:
        WARNING = "warning"

        def __init__(self, severity):
            pass

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            trt.built["network"] = FakeNetwork(flags, [trt.LayerType[t] for t in layer_types])
            return trt.built["network"]

        def create_builder_config(self):
            trt.built["config"] = FakeBuilderConfig()
            return trt.built["config"]

        def build_serialized_network(self, network, config):
            return b"engine of TensorRT " + version.encode()

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = 0

        def parse(self, data):
            trt.built["onnx"] = data
            return True

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    return trt


@pytest.mark.parametrize("version", ["10.13.0", "11.4.0"])
def test_fp32_sets_no_precision_flag(version, monkeypatch):
    from diffface.networks.export.tensorrt import build_engine_from_onnx

    trt = fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    engine = build_engine_from_onnx(b"graph", ExportConfig("tensorrt"), (1, 3, 96, 96))
    assert engine == b"engine of TensorRT " + version.encode() and trt.built["onnx"] == b"graph"
    assert trt.built["config"].flags == []
    assert trt.built["config"].pools == {trt.MemoryPoolType.WORKSPACE: 1 << 30}
    assert all(layer.precision is None for layer in trt.built["network"].layers)
    strongly_typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert trt.built["network"].flags == (0 if version.startswith("10") else strongly_typed)


def test_fp16_on_tensorrt_10_uses_the_builder_flag_and_pins_the_head(monkeypatch):
    from diffface.networks.export.tensorrt import build_engine_from_onnx, precision_plan

    trt = fake_tensorrt("10.13.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    plan = precision_plan(trt, fp16=True)
    assert plan.api == "builder-flag" and not plan.fp16_graph
    build_engine_from_onnx(b"fp32 graph", ExportConfig("tensorrt", fp16=True), (1, 3, 96, 96))
    assert trt.built["config"].flags == [trt.BuilderFlag.FP16, trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS]
    assert trt.built["network"].flags == 0  # weak typing: not strongly typed, explicit batch implied since 10
    pinned = {layer.type.name for layer in trt.built["network"].layers if layer.precision == trt.float32}
    assert pinned == {"MATRIX_MULTIPLY", "ELEMENTWISE"}
    assert all(layer.output_types == ({0: trt.float32} if layer.type.name in pinned else {})
               for layer in trt.built["network"].layers)


def test_fp16_on_tensorrt_11_is_strongly_typed(monkeypatch):
    from diffface.networks.export.tensorrt import build_engine_from_onnx, precision_plan

    trt = fake_tensorrt("11.4.0")
    assert not hasattr(trt.BuilderFlag, "FP16")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    plan = precision_plan(trt, fp16=True)
    assert plan.api == "strongly-typed" and plan.fp16_graph
    build_engine_from_onnx(b"fp16 graph", ExportConfig("tensorrt", fp16=True), (1, 3, 96, 96))
    assert trt.built["config"].flags == []  # no precision flag exists; the graph's types decide
    assert trt.built["network"].flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert all(layer.precision is None for layer in trt.built["network"].layers)


def test_explicit_batch_only_before_tensorrt_10():
    from diffface.networks.export.tensorrt import precision_plan

    trt = fake_tensorrt("8.6.1")
    assert precision_plan(trt, fp16=False).network_flags == 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    assert precision_plan(fake_tensorrt("10.0.1"), fp16=False).network_flags == 0


@pytest.mark.parametrize("version, fp16_graph", [("10.13.0", False), ("11.4.0", True)])
def test_export_parses_the_graph_of_the_precision_api(version, fp16_graph, optional_import, checkpoint, tmp_path,
                                                      monkeypatch):
    """The whole onnx-parser export with the fake TensorRT: on 11 the parser gets an fp16 graph with float32
    inputs and outputs (which TensorRT's checks accept and whose outputs stay inside the fp16 bounds in
    onnxruntime), on 10 the float32 graph."""
    onnx = optional_import("onnx", 'pip install "diffface[export]"')
    optional_import("onnxscript", 'pip install "diffface[export]"')
    trt = fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    from diffface.networks.export import tensorrt as tensorrt_export

    # as on a GPU, leaving torch.cuda.is_available alone (the ONNX exporter consults it)
    monkeypatch.setattr(tensorrt_export, "_require_cuda", lambda what: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "fake GPU")
    config = ExportConfig("tensorrt", fp16=True, engine_cache=str(tmp_path / "cache"))
    result = export_checkpoint(checkpoint, tmp_path / "m.engine", config, parity=False)
    assert (tmp_path / "m.engine").read_bytes() == b"engine of TensorRT " + version.encode()
    assert ("strongly typed" if fp16_graph else "BuilderFlag.FP16") in result.notes[-1]
    graph = onnx.load_from_string(trt.built["onnx"])
    types = {onnx.TensorProto.DataType.Name(t.data_type) for t in graph.graph.initializer if len(t.dims) == 4}
    assert types == ({"FLOAT16"} if fp16_graph else {"FLOAT"})  # the convolution weights
    assert ("Cast" in {node.op_type for node in graph.graph.node}) == fp16_graph
    path = tmp_path / "parsed.onnx"
    path.write_bytes(trt.built["onnx"])
    assert check_onnx_for_tensorrt(path) == []  # float32 inputs and outputs, supported operators
    if fp16_graph:
        optional_import("onnxruntime", 'pip install "diffface[export]"')
        from diffface.networks.export import TOLERANCES, compare
        from diffface.networks.export.onnx import load_onnx

        deployable = make_deployable(load_checkpoint(checkpoint))
        report = compare(load_onnx(path), deployable, {"random": deployable.example_input(4, 1)}, "tensorrt-fp16",
                         TOLERANCES["tensorrt-fp16"])
        assert report.passed and report.worst.max_abs_error > 1e-4  # really fp16, and inside its bounds


def test_torch2trt_fp16_needs_the_builder_flag(checkpoint, tmp_path, monkeypatch):
    import types

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("11.4.0"))
    monkeypatch.setitem(sys.modules, "torch2trt", types.ModuleType("torch2trt"))
    with pytest.raises(BackendUnavailable, match="BuilderFlag.FP16.*removed in 11"):
        export_checkpoint(checkpoint, tmp_path / "m.trt.pth",
                          ExportConfig("tensorrt", fp16=True, tensorrt_backend="torch2trt"), parity=False)

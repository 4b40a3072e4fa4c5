"""TensorRT engines (fp32 or fp16) with an engine cache, through three front ends:

- ``onnx-parser`` (default): the ``.onnx`` of :mod:`.onnx` parsed by ``tensorrt.OnnxParser`` and built into a
  serialised engine (``.engine``, the file ``trtexec --onnx`` would build).
- ``torch-tensorrt``: ``torch_tensorrt.compile(ir="dynamo")`` of the deployable module, saved as an
  ExportedProgram with the TensorRT engine embedded (load with ``torch.export.load`` after importing
  ``torch_tensorrt``).
- ``torch2trt``: NVIDIA-AI-IOT's converter (unmaintained, not on PyPI), saved as its ``TRTModule`` state dict.

Precision (``--fp16``), chosen by what the installed ``tensorrt`` offers (:func:`precision_plan`), for
TensorRT 10.x and 11.x (``tensorrt>=10,<12``):

- TensorRT 10 (``BuilderFlag.FP16`` exists; weak typing): the float32 ONNX graph, ``BuilderFlag.FP16`` so
  that TensorRT may pick fp16 kernels, and the matrix products and element-wise layers (the last linear
  layer, which carries the denormalisation with ``t_z`` ~600 mm, and the mesh head) pinned to float32 with
  ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS``.
- TensorRT 11 (``BuilderFlag.FP16`` and the precision-constraint flags removed; networks are always strongly
  typed, ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` set where the enum still has it): the types come
  from the graph, so an fp16 ONNX graph is exported (:func:`fp16_deployable`: inputs and outputs float32,
  the convolutions in float16, the same last layer and mesh head in float32).

Engines are specific to the GPU, the TensorRT version, the precision and the input shapes; the cache key
hashes all of them with the model's bytes, so a stale engine is never reused. Everything imports lazily:
without ``tensorrt`` (and a CUDA GPU) only :func:`check_onnx_for_tensorrt` runs, which checks the ONNX graph
against the TensorRT ONNX parser's operator list and opset range and the static shapes it needs.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch
from torch import nn

from .backends import BackendUnavailable, import_backend
from .config import ExportConfig
from .deploy import Deployable, FaceMeshModel, FaceParametersModel
from .runtime import Runner, module_runner
from diffface.atomic_io import atomic_write
from .onnx import export_onnx
from .onnx import onnx_summary

# The opsets TensorRT 10.x's ONNX parser reads (operators.md: "opset 9 to opset 20"); TensorRT 8.6 stops at 17.
TENSORRT_OPSETS = range(9, 21)
# Operators the TensorRT 10 ONNX parser supports (onnx-tensorrt docs/operators.md, "Y" rows), for the
# checks that run without TensorRT. A graph of MobileFace needs Conv, Relu, ReduceMean/GlobalAveragePool,
# Reshape/Flatten, Gemm, and with the mesh head MatMul/Add/Slice.
TENSORRT_ONNX_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip
Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout
Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool
GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GroupNormalization GRU HardSigmoid HardSwish Identity If
InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LpNormalization
LpPool LRN LSTM MatMul Max MaxPool Mean Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad Pow PRelu
QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2
ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape
Resize ReverseSequence RNN RoiAlign Round ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size
Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK
Transpose Trilu Unsqueeze Where Xor
""".split())
WORKSPACE_BYTES = 1 << 30
# TensorRT 10 with BuilderFlag.FP16: layer types kept in float32 (the last linear layer is a matrix product and an
# element-wise bias add whose bias holds the denormalisation means, t_z ~600 mm, beyond fp16's 0.5 mm steps there)
FP32_LAYER_TYPES = ("MATRIX_MULTIPLY", "ELEMENTWISE")


class TensorRTCompatibilityError(ValueError):
    """An ONNX graph that TensorRT's ONNX parser would reject (or build only with dynamic shapes)."""


def check_onnx_for_tensorrt(path: str | Path, require_static: bool = True) -> list[str]:
    """Problems TensorRT's ONNX parser would have with ``path`` (empty when none).

    Checks: ``onnx.checker`` passes (raises otherwise), the default-domain opset is in
    :data:`TENSORRT_OPSETS`, every operator is in :data:`TENSORRT_ONNX_OPS` and in the default domain,
    every input and output is float32, and (``require_static``) every input dimension is a fixed number.
    """
    onnx = import_backend("onnx")
    summary = onnx_summary(path)
    problems = []
    if summary["opset"] not in TENSORRT_OPSETS:
        problems.append(f"opset {summary['opset']} outside TensorRT's {TENSORRT_OPSETS.start}..{TENSORRT_OPSETS.stop - 1}")
    unsupported = [op for op in summary["ops"] if op not in TENSORRT_ONNX_OPS]
    if unsupported:
        problems.append(f"operators TensorRT's ONNX parser lacks: {unsupported}")
    foreign = [d for d in summary["op_domains"] if d != "ai.onnx"]
    if foreign:
        problems.append(f"operators from custom domains {foreign} (need TensorRT plugins)")
    model = onnx.load(str(path))
    for value in list(model.graph.input) + list(model.graph.output):
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"{value.name} is {onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)}, "
                            "not FLOAT")
    if require_static:
        for name, dims in summary["inputs"].items():
            if not all(isinstance(d, int) and d > 0 for d in dims):
                problems.append(f"input {name} has dynamic shape {dims} (export with a static --batch)")
    return problems


def model_fingerprint(deployable: Deployable, extra: str = "") -> bytes:
    """Bytes identifying the deployable module: its structure, every weight and buffer, and ``extra``."""
    digest = hashlib.sha256(repr(deployable.module).encode() + extra.encode())
    for name, tensor in deployable.module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.digest()


def engine_cache_key(model_bytes: bytes, config: ExportConfig, input_shape: tuple[int, ...], backend: str,
                     tensorrt_version: str, device_name: str) -> str:
    """A hash of everything an engine depends on: the model, precision, shapes, TensorRT version and GPU."""
    digest = hashlib.sha256(model_bytes)
    shapes = f"{input_shape}, dynamic 1..{config.max_batch}" if config.dynamic_batch else str(input_shape)
    for part in (backend, "fp16" if config.fp16 else "fp32", shapes, tensorrt_version, device_name):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:24]


def cached_build(cache_dir: str | None, key: str, build: Callable[[], bytes]) -> tuple[bytes, str]:
    """``build()``'s engine bytes, read from ``cache_dir/KEY.engine`` when present; with a note saying which."""
    if cache_dir is None:
        return build(), "engine cache off"
    entry = Path(cache_dir) / f"{key}.engine"
    if entry.is_file():
        return entry.read_bytes(), f"engine from cache {entry}"
    engine = build()
    entry.parent.mkdir(parents=True, exist_ok=True)

    with atomic_write(entry) as handle:
        handle.write(engine)
    return engine, f"engine built and cached as {entry}"


def _require_cuda(what: str) -> None:
    if not torch.cuda.is_available():
        raise BackendUnavailable(f"{what} needs a CUDA GPU and a CUDA build of torch (torch.cuda.is_available() "
                                 "is False)")


def _static_batch(config: ExportConfig | None) -> int | None:
    return None if (config is None or config.dynamic_batch) else config.batch_size


def _input_shape(deployable: Deployable, batch: int) -> tuple[int, int, int, int]:
    return (batch, 3, deployable.input_size, deployable.input_size)


# --- precision: TensorRT 10's builder flags or TensorRT 11's strong typing -------------------------------------
@dataclasses.dataclass(frozen=True)
class PrecisionPlan:
    """How an engine gets its precision on the installed TensorRT.

    Attributes:
        api: ``"builder-flag"`` (TensorRT <= 10, weak typing) or ``"strongly-typed"`` (TensorRT >= 11).
        fp16_graph: parse the fp16 ONNX graph of :func:`fp16_deployable` instead of the float32 one.
        network_flags: the bits passed to ``Builder.create_network``.
        builder_flags: names of the ``BuilderFlag`` members to set.
        fp32_layer_types: names of the ``LayerType`` members whose layers are pinned to float32.
    """

    api: str
    fp16_graph: bool
    network_flags: int
    builder_flags: tuple[str, ...]
    fp32_layer_types: tuple[str, ...]


def tensorrt_major(trt: ModuleType) -> int:
    return int(str(trt.__version__).split(".")[0])


def precision_plan(trt: ModuleType, fp16: bool) -> PrecisionPlan:
    """The precision settings for ``trt`` (the imported module), decided by which API it has.

    ``BuilderFlag.FP16`` present: weak typing (TensorRT 10 and before). Absent (TensorRT 11 removed it with
    every precision flag): a strongly typed network, whose fp16 layers must come from an fp16 graph.
    """
    creation = trt.NetworkDefinitionCreationFlag
    flags = 0
    if tensorrt_major(trt) < 10 and hasattr(creation, "EXPLICIT_BATCH"):  # implicit batch was the default before 10
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    if hasattr(trt.BuilderFlag, "FP16"):
        if not fp16:
            return PrecisionPlan("builder-flag", False, flags, (), ())
        return PrecisionPlan("builder-flag", False, flags, ("FP16", "OBEY_PRECISION_CONSTRAINTS"), FP32_LAYER_TYPES)
    if hasattr(creation, "STRONGLY_TYPED"):  # deprecated and ignored in 11 (always strongly typed), kept explicit
        flags |= 1 << int(creation.STRONGLY_TYPED)
    return PrecisionPlan("strongly-typed", fp16, flags, (), ())


class _ToDtype(nn.Module):
    """Casts its input to ``dtype`` (exported as an ONNX ``Cast``)."""

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.dtype)


def fp16_deployable(deployable: Deployable) -> Deployable:
    """A copy of ``deployable`` whose convolutions and pooling run in float16, for TensorRT 11's strongly
    typed networks (the graph's types are the engine's types).

    Inputs and outputs stay float32; the last linear layer (the denormalisation is folded into it: float16
    has 0.5 mm steps at t_z = 600 mm) and the mesh head run in float32.
    """
    if not isinstance(deployable.module, (FaceParametersModel, FaceMeshModel)):
        raise ValueError(f"no fp16 recipe for {type(deployable.module).__name__}")
    module = copy.deepcopy(deployable.module)
    features, pool, flatten, last = module.body  # parameter_graph's layers
    module.body = nn.Sequential(_ToDtype(torch.float16), features.half(), pool, flatten, _ToDtype(torch.float32),
                                last)
    return dataclasses.replace(deployable, module=module.eval())


def pin_layers_to_fp32(trt: ModuleType, network, layer_types: tuple[str, ...]) -> int:
    """Set the precision and output types of ``network``'s layers of ``layer_types`` to float32 (weak typing
    with ``OBEY_PRECISION_CONSTRAINTS``). Returns how many layers were pinned."""
    wanted = {getattr(trt.LayerType, name) for name in layer_types if hasattr(trt.LayerType, name)}
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type in wanted:
            layer.precision = trt.float32
            for output in range(layer.num_outputs):
                layer.set_output_type(output, trt.float32)
            pinned += 1
    return pinned


# --- TensorRT ONNX parser --------------------------------------------------------------------------------------
def build_engine_from_onnx(onnx_bytes: bytes, config: ExportConfig, input_shape: tuple[int, ...],
                           plan: PrecisionPlan | None = None) -> bytes:
    """A serialised TensorRT engine of an ONNX graph (``trtexec --onnx [--fp16]`` in Python), with the
    precision settings of ``plan`` (default: :func:`precision_plan` of the installed TensorRT)."""
    trt = import_backend("tensorrt")
    plan = plan or precision_plan(trt, config.fp16)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(plan.network_flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTCompatibilityError(f"TensorRT's ONNX parser rejected the graph: {errors}")
    builder_config = builder.create_builder_config()
    builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    for flag in plan.builder_flags:
        builder_config.set_flag(getattr(trt.BuilderFlag, flag))
    if plan.fp32_layer_types:
        pin_layers_to_fp32(trt, network, plan.fp32_layer_types)
    if config.dynamic_batch:
        profile = builder.create_optimization_profile()
        name = network.get_input(0).name
        profile.set_shape(name, (1, *input_shape[1:]), tuple(input_shape), (config.max_batch, *input_shape[1:]))
        builder_config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see the TensorRT log above)")
    return bytes(serialized)


def export_tensorrt_onnx_parser(deployable: Deployable, config: ExportConfig, path: Path) -> list[str]:
    """ONNX export, the TensorRT checks of :func:`check_onnx_for_tensorrt`, then the parser's engine (cached)."""
    trt = import_backend("tensorrt")
    _require_cuda("TensorRT")
    plan = precision_plan(trt, config.fp16)
    graph = fp16_deployable(deployable) if plan.fp16_graph else deployable
    shape = _input_shape(deployable, config.batch_size)
    key = engine_cache_key(model_fingerprint(graph, f"opset {config.opset}, {plan}"), config, shape, "onnx-parser",
                           trt.__version__, torch.cuda.get_device_name())
    notes: list[str] = []

    def build() -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            onnx_path = Path(tmp) / "model.onnx"
            notes.extend(export_onnx(graph, config, onnx_path))
            problems = check_onnx_for_tensorrt(onnx_path, require_static=not config.dynamic_batch)
            if problems:
                raise TensorRTCompatibilityError("; ".join(problems))
            return build_engine_from_onnx(onnx_path.read_bytes(), config, shape, plan)

    engine, cache_note = cached_build(config.engine_cache, key, build)
    path.write_bytes(engine)
    precision = "fp32"
    if config.fp16:
        precision = ("fp16 (strongly typed: fp16 ONNX graph)" if plan.fp16_graph else
                     "fp16 (BuilderFlag.FP16, matrix products and element-wise layers pinned to fp32)")
    return notes + [f"TensorRT {trt.__version__} {precision} engine; {cache_note}"]


def load_tensorrt_engine(path: str | Path, config: ExportConfig | None = None) -> Runner:
    """Run a serialised engine with the TensorRT runtime on the GPU (inputs and outputs moved to/from CPU)."""
    trt = import_backend("tensorrt")
    _require_cuda("TensorRT")
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(path).read_bytes())
    if engine is None:
        raise RuntimeError(f"{path}: TensorRT could not deserialise the engine (other GPU or TensorRT version?)")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    batch = engine.get_tensor_shape(inputs[0])[0]

    def run(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        stream = torch.cuda.current_stream()
        device_images = images.float().contiguous().cuda()
        context.set_input_shape(inputs[0], tuple(device_images.shape))
        context.set_tensor_address(inputs[0], device_images.data_ptr())
        results = []
        for name in outputs:
            out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
            context.set_tensor_address(name, out.data_ptr())
            results.append(out)
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return tuple(out.cpu() for out in results)

    return Runner(run, batch if batch > 0 else None, f"TensorRT {trt.__version__}")


# --- Torch-TensorRT ---------------------------------------------------------------------------------------------
def export_torch_tensorrt(deployable: Deployable, config: ExportConfig, path: Path) -> list[str]:
    """Compile with ``torch_tensorrt.compile(ir="dynamo")`` and save the ExportedProgram (engine inside)."""
    torch_tensorrt = import_backend("torch_tensorrt")
    _require_cuda("Torch-TensorRT")
    shape = _input_shape(deployable, config.batch_size)
    if config.dynamic_batch:
        spec = torch_tensorrt.Input(min_shape=(1, *shape[1:]), opt_shape=shape, max_shape=(config.max_batch, *shape[1:]),
                                    dtype=torch.float32)
    else:
        spec = torch_tensorrt.Input(shape, dtype=torch.float32)
    module = deployable.module.cuda()
    example = deployable.example_input(config.batch_size, config.seed).cuda()
    precisions = {torch.float16, torch.float32} if config.fp16 else {torch.float32}
    cache = {"cache_built_engines": True, "reuse_cached_engines": True,
             "engine_cache_dir": str(config.engine_cache)} if config.engine_cache else {}
    compiled = torch_tensorrt.compile(module, ir="dynamo", inputs=[spec], enabled_precisions=precisions, **cache)
    torch_tensorrt.save(compiled, str(path), inputs=[example])
    deployable.module.cpu()
    cache_note = f"Torch-TensorRT engine cache {config.engine_cache}" if config.engine_cache else "engine cache off"
    return [f"Torch-TensorRT {torch_tensorrt.__version__} {'fp16' if config.fp16 else 'fp32'}; {cache_note}"]


def load_torch_tensorrt(path: str | Path, config: ExportConfig | None = None) -> Runner:
    torch_tensorrt = import_backend("torch_tensorrt")
    _require_cuda("Torch-TensorRT")
    module = torch.export.load(str(path)).module()
    return module_runner(module, f"Torch-TensorRT {torch_tensorrt.__version__}", _static_batch(config), "cuda")


# --- torch2trt --------------------------------------------------------------------------------------------------
def export_torch2trt(deployable: Deployable, config: ExportConfig, path: Path) -> list[str]:
    """Convert with ``torch2trt`` (its own TensorRT network builder) and save the ``TRTModule`` state dict."""
    torch2trt = import_backend("torch2trt")
    trt = import_backend("tensorrt")
    if config.fp16 and precision_plan(trt, True).api != "builder-flag":
        raise BackendUnavailable(f"torch2trt's fp16_mode sets BuilderFlag.FP16, which TensorRT {trt.__version__} "
                                 "no longer has (removed in 11); use --tensorrt-backend onnx-parser for fp16")
    _require_cuda("torch2trt")
    shape = _input_shape(deployable, config.batch_size)

    def build() -> bytes:
        module = deployable.module.cuda()
        example = deployable.example_input(config.batch_size, config.seed).cuda()
        converted = torch2trt.torch2trt(module, [example], fp16_mode=config.fp16,
                                        max_batch_size=config.max_batch if config.dynamic_batch else config.batch_size,
                                        max_workspace_size=WORKSPACE_BYTES)
        deployable.module.cpu()
        buffer = io.BytesIO()
        torch.save(converted.state_dict(), buffer)
        return buffer.getvalue()

    key = engine_cache_key(model_fingerprint(deployable), config, shape, "torch2trt", trt.__version__,
                           torch.cuda.get_device_name())
    engine, cache_note = cached_build(config.engine_cache, key, build)
    path.write_bytes(engine)
    return [f"torch2trt with TensorRT {trt.__version__} {'fp16' if config.fp16 else 'fp32'}; {cache_note}"]


def load_torch2trt(path: str | Path, config: ExportConfig | None = None) -> Runner:
    torch2trt = import_backend("torch2trt")
    _require_cuda("torch2trt")
    module = torch2trt.TRTModule()
    # torch2trt's state dict holds the serialised engine as bytes: not loadable with weights_only=True
    module.load_state_dict(torch.load(str(path), map_location="cuda", weights_only=False))
    return module_runner(module, "torch2trt", _static_batch(config), "cuda")


TENSORRT_BACKENDS = {
    "onnx-parser": (export_tensorrt_onnx_parser, load_tensorrt_engine),
    "torch-tensorrt": (export_torch_tensorrt, load_torch_tensorrt),
    "torch2trt": (export_torch2trt, load_torch2trt),
}


def export_tensorrt(deployable: Deployable, config: ExportConfig, path: Path) -> list[str]:
    """Build a TensorRT engine through ``config.tensorrt_backend``."""
    return TENSORRT_BACKENDS[config.tensorrt_backend][0](deployable, config, path)


def load_tensorrt(path: str | Path, config: ExportConfig | None = None) -> Runner:
    backend = config.tensorrt_backend if config is not None else "onnx-parser"
    return TENSORRT_BACKENDS[backend][1](path, config)

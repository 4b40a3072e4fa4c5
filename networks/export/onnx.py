"""ONNX export (``.onnx``, one self-contained file) run with onnxruntime.

Opset: :data:`~.config.DEFAULT_OPSET` (18) through ``torch.onnx.export(dynamo=True)``, the torch.export-based
exporter that is the default since torch 2.9 (it needs ``onnxscript`` and writes opset 18 or newer).
``opset < 18`` (for TensorRT 8.x, whose parser stops at opset 17) goes through the legacy TorchScript-based
exporter, deprecated in torch 2.13 but still able to write older opsets. The graph of MobileFace is
Conv, Relu, ReduceMean (or GlobalAveragePool), Reshape/Flatten and Gemm (plus Slice and a second Gemm with the
mesh head).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .backends import import_backend
from .config import ExportConfig
from .deploy import Deployable
from .runtime import Runner

DYNAMO_MIN_OPSET = 18
INPUT_NAME = "images"


def export_onnx(deployable: Deployable, config: ExportConfig, path: Path) -> list[str]:
    """Write ``deployable`` as ONNX (static batch ``config.batch_size`` unless ``config.dynamic_batch``)."""
    import_backend("onnx")
    example, dynamic = deployable.export_inputs(config)
    names = list(deployable.output_names)
    if config.opset >= DYNAMO_MIN_OPSET:
        import_backend("onnxscript")
        program = torch.onnx.export(deployable.module, example, None, opset_version=config.opset, dynamo=True,
                                    input_names=[INPUT_NAME], output_names=names, dynamic_shapes=dynamic,
                                    verbose=False)
        program.save(str(path), external_data=False)
        _strip_debug_metadata(path)
        exporter = "torch.onnx.export(dynamo=True)"
    else:
        axes = {name: {0: "batch"} for name in [INPUT_NAME] + names} if config.dynamic_batch else None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(deployable.module, example, str(path), opset_version=config.opset, dynamo=False,
                              input_names=[INPUT_NAME], output_names=names, dynamic_axes=axes)
        exporter = "legacy TorchScript-based exporter (deprecated; opsets below 18)"
    summary = onnx_summary(path)
    return [f"opset {summary['opset']} via {exporter}; input {summary['inputs'][INPUT_NAME]}; "
            f"ops {', '.join(summary['ops'])}"]


def _strip_debug_metadata(path: Path) -> None:
    """Drop the exporter's per-node debug strings (stack traces, FX nodes: ~8% of the file)."""
    onnx = import_backend("onnx")
    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save(model, str(path))


def onnx_summary(path: str | Path) -> dict:
    """Opset, operator types and input/output shapes (ints, or names for dynamic dims) of an ONNX file;
    raises if ``onnx.checker`` rejects it."""
    onnx = import_backend("onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)

    def dims(value_info) -> list[int | str]:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in value_info.type.tensor_type.shape.dim]

    opsets = {entry.domain or "ai.onnx": entry.version for entry in model.opset_import}
    return {"opset": opsets.get("ai.onnx"), "opsets": opsets, "ops": sorted({node.op_type for node in model.graph.node}),
            "op_domains": sorted({node.domain or "ai.onnx" for node in model.graph.node}),
            "inputs": {v.name: dims(v) for v in model.graph.input},
            "outputs": {v.name: dims(v) for v in model.graph.output}}


def onnx_session(path: str | Path, threads: int | None = None, providers: list[str] | None = None):
    """An onnxruntime ``InferenceSession`` (all graph optimisations; ``threads`` intra-op threads)."""
    ort = import_backend("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


def load_onnx(path: str | Path, config: ExportConfig | None = None, threads: int | None = None,
              providers: list[str] | None = None) -> Runner:
    """Run a ``.onnx`` with onnxruntime (CPU unless ``providers`` says otherwise)."""
    ort = import_backend("onnxruntime")
    session = onnx_session(path, threads, providers)
    batch = session.get_inputs()[0].shape[0]
    input_name = session.get_inputs()[0].name

    def run(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = session.run(None, {input_name: images.detach().cpu().float().contiguous().numpy()})
        return tuple(torch.from_numpy(out) for out in outputs)

    return Runner(run, batch if isinstance(batch, int) else None,
                  f"onnxruntime {ort.__version__} {session.get_providers()[0]}")

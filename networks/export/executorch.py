"""ExecuTorch (``.pte``) with the XNNPACK delegate: the current on-device path of PyTorch (ARM and x86).

``torch.export`` captures the deployable module, ``to_edge_transform_and_lower`` hands every supported
subgraph (here all of it: conv, relu, mean, linear, and addmm with the mesh head) to XNNPACK, and the
program is serialised to a flatbuffer the C++ runtime (or ``executorch.runtime`` in Python) runs.
Needs ``pip install executorch==1.5.1`` (works beside torch 2.13.0 without replacing it).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .backends import import_backend
from .config import ExportConfig
from .deploy import Deployable
from .runtime import Runner


def export_executorch(deployable: Deployable, config: ExportConfig, path: Path) -> list[str]:
    """Write a ``.pte`` (static batch ``config.batch_size``, or 1..``max_batch`` with ``dynamic_batch``)."""
    exir = import_backend("executorch.exir")
    xnnpack = import_backend("executorch.backends.xnnpack.partition.xnnpack_partitioner")
    example, dynamic = deployable.export_inputs(config)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # executorch 1.5 vs torch 2.13 pytree notices
        program = torch.export.export(deployable.module, example, dynamic_shapes=dynamic)
        lowered = exir.to_edge_transform_and_lower(program, partitioner=[xnnpack.XnnpackPartitioner()])
        delegated = _delegated_share(lowered.exported_program().graph_module)
        Path(path).write_bytes(lowered.to_executorch().buffer)
    return [f"torch.export + XNNPACK delegate ({delegated}); executorch {_version()}"]


def _delegated_share(graph_module: torch.fx.GraphModule) -> str:
    """How many compute nodes are left outside the XNNPACK delegate (0: the whole graph is delegated)."""
    calls = [n for n in graph_module.graph.nodes if n.op == "call_function"]
    delegates = sum("executorch_call_delegate" in str(n.target) for n in calls)
    outside = [str(n.target) for n in calls if "executorch_call_delegate" not in str(n.target)
               and "getitem" not in str(n.target)]
    return f"{delegates} delegate call(s), {len(outside)} op(s) outside" + (f": {outside}" if outside else "")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("executorch")
    except PackageNotFoundError:
        return "?"


def load_executorch(path: str | Path, config: ExportConfig | None = None) -> Runner:
    """Run a ``.pte`` with ``executorch.runtime`` (the portable runtime with the XNNPACK backend)."""
    runtime = import_backend("executorch.runtime")
    program = runtime.Runtime.get().load_program(Path(path))
    method = program.load_method("forward")
    batch = None
    meta = method.metadata.input_tensor_meta(0) if hasattr(method, "metadata") else None
    if meta is not None and config is not None and not config.dynamic_batch:
        batch = int(meta.sizes()[0])

    def run(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(out.clone() for out in method.execute([images.detach().cpu().float().contiguous()]))

    return Runner(run, batch, f"executorch {_version()} runtime (XNNPACK)")

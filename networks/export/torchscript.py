"""TorchScript (``.pt``, scripted and frozen) and TorchScript-mobile (``.ptl``, the lite interpreter).

torch 2.13 deprecates ``torch.jit.script``, ``torch.jit.freeze`` and the lite interpreter in favour of
``torch.export`` and ExecuTorch (:mod:`.executorch`); these files stay for the users who deploy with
them. ``optimize_for_mobile`` needs a torch built with XNNPACK: where it is missing (the CPU wheel of
torch 2.13 for x86) the ``.ptl`` is saved unoptimised and the export notes say so.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from .config import ExportConfig
from .deploy import Deployable
from .runtime import Runner, module_runner


@contextmanager
def _quiet_jit_deprecation():
    """torch 2.13 warns on every TorchScript entry point; the module docstring says why we still use them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*(deprecated|Lite Interpreter).*")
        yield


def script(deployable: Deployable, freeze: bool = True, for_this_cpu: bool = False,
           channels_last: bool = True) -> torch.jit.ScriptModule:
    """The deployable module scripted, frozen (weights inlined as constants) and, with ``for_this_cpu``,
    passed through ``torch.jit.optimize_for_inference`` (oneDNN layouts and prepacked weights: faster on
    x86 but tied to a torch build with MKLDNN, so not what :func:`export_torchscript` writes).

    ``channels_last`` stores the convolution weights in NHWC order: the CPU convolutions then run on
    NHWC activations (oneDNN's native layout for depthwise convolutions) instead of reordering the
    activations to and from a blocked layout around every layer; the input may stay NCHW."""
    module = copy.deepcopy(deployable.module).eval()
    if channels_last and not for_this_cpu:  # optimize_for_inference picks its own layouts
        module = module.to(memory_format=torch.channels_last)
    with _quiet_jit_deprecation():
        scripted = torch.jit.script(module)
        if for_this_cpu:
            return torch.jit.optimize_for_inference(scripted)
        return torch.jit.freeze(scripted) if freeze else scripted


def export_torchscript(deployable: Deployable, config: ExportConfig, path: Path) -> list[str]:
    """Write a frozen TorchScript file. Returns notes for the export report."""
    script(deployable, freeze=True).save(str(path))
    return ["torch.jit.script + torch.jit.freeze (deprecated in torch 2.13; kept for TorchScript users); "
            "convolution weights channels-last (NHWC)"]


def xnnpack_enabled() -> bool:
    """Whether this torch build has XNNPACK, which ``optimize_for_mobile`` needs."""
    probe = getattr(torch._C, "_is_xnnpack_enabled", None)
    return bool(probe and probe())


def optimize_for_mobile_if_available(scripted: torch.jit.ScriptModule) -> tuple[torch.jit.ScriptModule, str]:
    """``optimize_for_mobile(scripted)`` where this torch has XNNPACK, else ``scripted``; with a note saying which."""
    from torch.utils.mobile_optimizer import optimize_for_mobile

    if not xnnpack_enabled():
        return scripted, ("optimize_for_mobile not applied: this torch build has no XNNPACK "
                          "(torch._C._is_xnnpack_enabled() is False); saved the scripted module unoptimised")
    try:
        with _quiet_jit_deprecation():
            return optimize_for_mobile(scripted), "optimize_for_mobile applied (XNNPACK conv/linear rewrites, folding)"
    except RuntimeError as exc:  # e.g. the XNNPACK rewrite asserting on an unsupported build
        return scripted, f"optimize_for_mobile failed ({str(exc).splitlines()[0][:200]}); saved unoptimised"


def export_mobile(deployable: Deployable, config: ExportConfig, path: Path) -> list[str]:
    """Write a TorchScript-mobile file for the lite interpreter. Returns notes for the export report."""
    scripted, note = optimize_for_mobile_if_available(script(deployable, freeze=False))
    with _quiet_jit_deprecation():
        scripted._save_for_lite_interpreter(str(path))
    return [note, "lite interpreter (deprecated in torch 2.13 in favour of ExecuTorch; kept for TorchScript-mobile)"]


def load_torchscript(path: str | Path, config: ExportConfig | None = None) -> Runner:
    """Run a ``.pt`` with ``torch.jit.load`` (any batch)."""
    with _quiet_jit_deprecation():
        module = torch.jit.load(str(path), map_location="cpu").eval()
    return module_runner(module, f"torch.jit {torch.__version__}")


def load_mobile(path: str | Path, config: ExportConfig | None = None) -> Runner:
    """Run a ``.ptl`` with the lite interpreter (any batch)."""
    from torch.jit.mobile import _load_for_lite_interpreter

    with _quiet_jit_deprecation():
        module = _load_for_lite_interpreter(str(path))
    return module_runner(module, f"lite interpreter (torch {torch.__version__})")

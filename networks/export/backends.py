"""Lazy imports of the optional export runtimes, with an error naming the package and the install command.

Nothing here is imported at module load: ``import diffface.networks.export`` pulls in torch only.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# module -> how to install it
INSTALL_HINTS = {
    "onnx": 'pip install "diffface[export]"  (or: pip install onnx)',
    "onnxscript": 'pip install "diffface[export]"  (or: pip install onnxscript; torch.onnx.export(dynamo=True) needs it)',
    "onnxruntime": 'pip install "diffface[export]"  (or: pip install onnxruntime; onnxruntime-gpu for CUDA)',
    "executorch": 'pip install "diffface[executorch]"  (or: pip install executorch==1.5.1)',
    "tensorrt": "pip install tensorrt  (needs NVIDIA's package index and a CUDA GPU; see docs/deployment.md)",
    "torch_tensorrt": "pip install torch-tensorrt  (matching your torch and CUDA; see docs/deployment.md)",
    "torch2trt": "torch2trt is not on PyPI: pip install git+https://github.com/NVIDIA-AI-IOT/torch2trt "
                 "(unmaintained; needs tensorrt)",
}


class BackendUnavailable(ImportError):
    """An optional export runtime is not installed (or not usable here)."""


def import_backend(module: str) -> ModuleType:
    """Import ``module`` (e.g. ``"onnxruntime"`` or ``"executorch.runtime"``) or raise naming how to install it.

    Example:
        >>> ort = import_backend("onnxruntime")
    """
    top = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(f"{module} is not available ({exc}); install it with: "
                                 f"{INSTALL_HINTS.get(top, 'pip install ' + top)}") from exc


def backend_available(module: str) -> tuple[bool, str]:
    """``(True, "")`` if ``module`` imports, else ``(False, the reason with the install command)``."""
    try:
        import_backend(module)
    except BackendUnavailable as exc:
        return False, str(exc)
    except Exception as exc:  # a broken install (e.g. a placeholder wheel) raises anything at import
        return False, f"{module} failed to import ({type(exc).__name__}: {exc})"
    return True, ""

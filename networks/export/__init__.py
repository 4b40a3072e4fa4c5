"""diffface.networks.export: deployable files of a trained regressor, with parity and latency figures.

Formats: TorchScript (``.pt``), TorchScript-mobile (``.ptl``), ONNX (``.onnx``, onnxruntime), ExecuTorch
(``.pte``, XNNPACK) and TensorRT (``.engine``; ONNX parser, Torch-TensorRT or torch2trt). Every file
outputs the final (denormalised) parameters, and with ``with_mesh`` the vertices too. Depends on the
core and :mod:`diffface.networks` only; each runtime is imported when used.

Example:
    >>> from diffface.networks.export import ExportConfig, export_checkpoint
    >>> result = export_checkpoint("run/model.pt", "model.onnx", ExportConfig("onnx"))
    >>> print(result.parity.table())
"""

from .backends import BackendUnavailable, backend_available, import_backend
from .config import (DEFAULT_OPSET, EXPORT_FORMATS, FORMATS, REQUIRES, SUFFIXES, TOLERANCES, ExportConfig, ExportFormat,
                     Tolerance)
from .deploy import (Deployable, FaceMeshModel, FaceParametersModel, MeshHead, fold_normalizer, make_deployable,
                     parameter_graph)
from .exporter import (FORMAT_IO, ExportResult, check_parity, export_checkpoint, export_deployable, load_exported,
                       parity_inputs)
from .parity import OutputParity, ParityError, ParityReport, compare, face_crops
from .runtime import Runner
from .tensorrt import TENSORRT_ONNX_OPS, TENSORRT_OPSETS, TensorRTCompatibilityError, check_onnx_for_tensorrt

__all__ = [
    "BackendUnavailable", "DEFAULT_OPSET", "Deployable", "EXPORT_FORMATS", "ExportConfig", "ExportFormat",
    "ExportResult", "FORMATS", "FORMAT_IO", "FaceMeshModel", "FaceParametersModel", "MeshHead", "OutputParity",
    "ParityError", "ParityReport", "Runner", "REQUIRES", "SUFFIXES", "TENSORRT_ONNX_OPS", "TENSORRT_OPSETS",
    "TOLERANCES", "TensorRTCompatibilityError", "Tolerance", "backend_available", "check_onnx_for_tensorrt",
    "check_parity", "compare", "export_checkpoint", "export_deployable", "face_crops", "fold_normalizer",
    "import_backend", "load_exported", "make_deployable", "parameter_graph", "parity_inputs",
]

"""TensorRT: the engine cache everywhere; engines themselves only where ``tensorrt`` imports and a GPU exists.

The PyPI ``tensorrt`` wheels are placeholders that download the library from NVIDIA's index at install
time (unreachable here), and the lent GPU machines have no TensorRT: the engine test skips with that reason.
"""

import pytest
import torch

from diffface.networks.export import BackendUnavailable, ExportConfig, backend_available, export_checkpoint
from diffface.networks.export import make_deployable
from diffface.networks.export.tensorrt import cached_build, engine_cache_key, model_fingerprint

TENSORRT_OK, TENSORRT_REASON = backend_available("tensorrt")


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
    import sys

    for module in ("tensorrt", "torch_tensorrt", "torch2trt"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed, here and where it is
    with pytest.raises(BackendUnavailable, match=package.replace("+", r"\+")):
        export_checkpoint(checkpoint, tmp_path / "m.engine", ExportConfig("tensorrt", tensorrt_backend=backend))

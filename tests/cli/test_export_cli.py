"""``diffface export`` and ``diffface bench network``."""

import json

import pytest
import torch

from diffface.cli.main import main


@pytest.fixture(scope="module")
def cli_checkpoint(tmp_path_factory):
    from diffface.networks import save_checkpoint
    from diffface.networks.export.deploy import fresh_regressor

    return save_checkpoint(tmp_path_factory.mktemp("cli") / "model.pt", fresh_regressor(width=4), step=1)


def test_export_torchscript_prints_the_parity_report(cli_checkpoint, tmp_path, capsys):
    out = tmp_path / "model.pt"
    assert main(["export", str(cli_checkpoint), "--format", "torchscript", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "parity of torchscript" in text and "random   params" in text and "ok" in text
    assert torch.jit.load(str(out))(torch.rand(1, 3, 96, 96)).shape == (1, 118)


def test_export_mobile_with_mesh_and_real_photo_json(cli_checkpoint, shared_data, tmp_path, capsys):
    out = tmp_path / "model.ptl"
    image = shared_data / "faces" / "image_0010.png"
    assert main(["export", str(cli_checkpoint), "--format", "mobile", "--out", str(out), "--with-mesh",
                 "--image", str(image), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["parity"]["passed"] and result["size_bytes"] == out.stat().st_size
    assert {(r["inputs"], r["output"]) for r in result["parity"]["results"]} == {
        ("random", "params"), ("random", "vertices"), ("real", "params"), ("real", "vertices")}


def test_export_onnx(cli_checkpoint, optional_import, tmp_path, capsys):
    optional_import("onnxruntime", 'pip install "diffface[export]"')
    optional_import("onnxscript", 'pip install "diffface[export]"')
    out = tmp_path / "model.onnx"
    assert main(["export", str(cli_checkpoint), "--format", "onnx", "--out", str(out)]) == 0
    assert "opset 18" in capsys.readouterr().out


def test_bad_checkpoint_gives_one_clear_line(tmp_path, capsys):
    broken = tmp_path / "broken.pt"
    broken.write_text("nope")
    assert main(["export", str(broken), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffface export: error:") and "broken.pt: not a readable checkpoint" in err
    assert "Traceback" not in err
    assert main(["export", str(tmp_path / "absent.pt"), "--format", "onnx"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_bench_network_json_answers_the_issues_keys(cli_checkpoint, optional_import, capsys):
    optional_import("onnxruntime", 'pip install "diffface[export]"')
    assert main(["bench", "network", "--ckpt", str(cli_checkpoint), "--formats", "eager,torchscript,mobile,onnx,tensorrt",
                 "--quick", "--threads", "1", "--throughput-batch", "8", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["onnxruntime_cpu_ms"] > 0 and figures["torchscript_cpu_ms"] > 0
    assert figures["lite_interpreter_ok"] is True and figures["max_abs_parity_error"] < 1e-3
    variants = {row["variant"] for row in figures["results"]}
    assert {"eager", "torchscript-scripted", "torchscript-frozen", "mobile", "onnxruntime-1thread",
            "onnxruntime-2thread"} <= variants
    assert all(row["throughput_per_s"] > 0 and row["latency_ms_p95"] >= row["latency_ms_median"]
               for row in figures["results"])
    assert figures["network"]["params"] > 0
    assert all(row["parity_worst"].split()[0] in {"alpha_id", "alpha_exp", "translation", "angles", "focal",
                                                  "principal_point"} for row in figures["results"])
    # TensorRT: exactly the reason this machine gives, or its figures where it runs
    from diffface.networks.export import backend_available

    importable, reason = backend_available("tensorrt")
    if not importable:
        assert figures["unavailable"]["tensorrt"] == reason
    elif not torch.cuda.is_available():
        assert figures["unavailable"]["tensorrt"] == "failed: RuntimeError: TensorRT imports but there is no CUDA GPU"
    else:
        assert "tensorrt" not in figures["unavailable"]
        assert figures["tensorrt_fp32_ms"] > 0 and figures["tensorrt_fp16_ms"] > 0


def test_bench_rejects_unknown_formats(capsys):
    assert main(["bench", "network", "--formats", "eager,coreml", "--quick"]) == 2
    assert "unknown bench formats ['coreml']" in capsys.readouterr().err


def test_export_rejects_unknown_format_and_fp16_outside_tensorrt(cli_checkpoint, capsys):
    assert main(["export", str(cli_checkpoint), "--format", "coreml"]) == 2
    assert "unknown export format 'coreml'; choose one of torchscript, mobile, onnx" in capsys.readouterr().err
    assert main(["export", str(cli_checkpoint), "--format", "onnx", "--fp16"]) == 2
    assert "TensorRT engines only" in capsys.readouterr().err

"""tools/gpu_check.sh: its CPU smoke mode runs every step and writes one JSON file; the budget cuts it short
cleanly. (On a CUDA machine the same script is the GPU check; none was available where this was written.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "gpu_check.sh"
STEPS = ["environment", "install", "cuda_tests", "render", "fit_stage1", "fit_stage2", "network", "train_data",
         "train"]


def run_check(out: Path, *options: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), str(out), *options], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def test_cpu_quick_mode_runs_every_step(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = run_check(out, "--device", "cpu", "--quick", "--no-install")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    steps = report["steps"]
    assert list(steps) == STEPS
    assert {name: step["status"] for name, step in steps.items()} == {
        **{name: "ok" for name in STEPS}, "install": "skipped"}, {n: s.get("error") for n, s in steps.items()}
    assert all(step["seconds"] <= step["limit_s"] + 5 for step in steps.values())
    assert report["seconds_total"] <= report["budget_s"] + 10
    environment = steps["environment"]["result"]
    assert environment["executable"] == sys.executable and environment["importable"]["kornia"] is True
    assert steps["install"]["result"]["commands"][-1].endswith(f"--no-deps --no-build-isolation -e {ROOT}")
    assert steps["cuda_tests"]["result"]["failures"] == 0
    # every benchmark's own JSON is merged in, with the figures the summary picks
    summary = report["summary"]
    assert steps["render"]["result"]["device"] == "cpu" and summary["rasterizer_builtin_ms"] > 0
    assert summary["stage1_model_batch"] == ["builtin", 2] and summary["stage1_images_per_s"] > 0
    assert summary["stage2_model_batch"] == ["builtin", 1] and summary["stage2_images_per_s"] > 0
    assert steps["fit_stage1"]["result"]["texture_rows"] == [] and steps["fit_stage2"]["result"]["rows"] == []
    assert summary["network_eager_device"] == "cpu" and summary["network_eager_ms"] > 0
    assert steps["train_data"]["result"]["synth"]["faces"] == 8
    assert steps["train"]["result"]["steps_run"] == 2 and summary["train_images_per_s"] > 0


def test_the_budget_stops_the_run_and_every_step_is_recorded(tmp_path):
    out = tmp_path / "short.json"
    done = run_check(out, "--device", "cpu", "--quick", "--no-install", "--budget", "3")
    assert done.returncode == 1  # a step ran out of time
    steps = json.loads(out.read_text())["steps"]
    assert list(steps) == STEPS
    statuses = [step["status"] for step in steps.values()]
    assert "timeout" in statuses and statuses[-1] == "skipped"
    assert all(status in ("ok", "timeout", "skipped") for status in statuses)
    assert all("no time left" in step["error"] for step in steps.values() if step["status"] == "skipped"
               and step is not steps["install"])

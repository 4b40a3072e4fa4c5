"""Running the demo's steps: its output folder, the export runtimes it needs, each step timed and named in
its errors, and the report (the figures table, ``report.json``, ``report.html``)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from diffface.atomic_io import write_text_atomic
from diffface.networks.export import backend_available
from diffface.networks.export.config import REQUIRES

from .demo_config import METHODS, DemoRun, DemoStepError
from .report_html import write_report_html


def clear_previous_demo(out: Path, folders: set[str]) -> None:
    """Create ``out``, or empty the step ``folders`` of a previous demo in it (the fit and dataset jobs resume,
    and must not pick up an older run); any other non-empty folder is refused, never cleared."""
    if out.is_dir() and any(out.iterdir()):
        try:
            is_demo = "train_faces" in json.loads((out / "config.json").read_text())
        except (OSError, ValueError):
            is_demo = False
        if not is_demo:
            raise ValueError(f"{out}: not empty and not a previous demo's folder; give a new or empty --out")
        for folder in folders:
            shutil.rmtree(out / folder, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def check_export_runtimes(formats: tuple[str, ...]) -> None:
    """Fail before the first step, not after minutes of work, when an export format's runtime is missing.

    Raises:
        ImportError: naming the package and its install command.
    """
    for name in formats:
        available, reason = backend_available(REQUIRES[name]) if name in REQUIRES else (True, "")
        if not available:
            raise ImportError(f"the demo's export step writes {name}, but {reason}")


def run_step(name: str, step: Callable[[DemoRun], dict], r: DemoRun, output: str) -> dict:
    """The step's figures with its ``seconds``; any failure becomes a :class:`DemoStepError` naming the step."""
    started = time.perf_counter()
    try:
        figures = step(r)
    except Exception as exc:
        raise DemoStepError(f"demo step '{name}' failed (outputs in {r.out / output}): "
                            f"{type(exc).__name__}: {exc}") from exc
    return {**figures, "seconds": round(time.perf_counter() - started, 2)}


def figures_table(steps: dict) -> list[dict]:
    """One row per method: evaluation figures (None without ground truth) and the 2D landmark RMS."""
    evaluated = steps.get("evaluate", {}).get("methods", {})
    rms = steps.get("figures", {}).get("landmark_rms_px", {})
    return [{"method": method, **evaluated.get(method, {}), "landmark_rms_px": rms.get(method)}
            for method in METHODS if method in evaluated or method in rms]


def write_report(out: Path, report: dict) -> None:
    """``report.json`` and the self-contained ``report.html`` into ``out``."""
    write_text_atomic(out / "report.json", json.dumps(report, indent=1, default=_plain))
    write_report_html(report, out, out / "report.html")


def _plain(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {value!r}")

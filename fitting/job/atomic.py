"""Atomic file writes: a temporary file beside the target, then a rename, so a file exists whole or not at all.

Temporary names are ``.<name>.<host>.<pid>.tmp`` (hidden, unique per process even on a shared disk), so
:func:`diffface.fitting.job.runner.run_fit_job` can remove the ones a killed job left behind.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def write_text_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path

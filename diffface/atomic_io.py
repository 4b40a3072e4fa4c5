"""Atomic file writes: a temporary file beside the target, then a rename, so a file exists whole or not at all.

Temporary names are ``.<name>.<host>.<pid>.tmp``: hidden, and unique per process even on a shared disk,
so concurrent writers never collide and a job can remove the ones a killed run left behind
(``.*.tmp``). A write that raises removes its temporary file; a killed process leaves it.
"""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

#: glob of the temporary files :func:`atomic_write` creates
TEMPORARY_GLOB = ".*.tmp"


def temporary_path(path: str | Path) -> Path:
    """The temporary name :func:`atomic_write` uses for ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")


@contextmanager
def atomic_write(path: str | Path, binary: bool = True) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success rename it to ``path``.

    Creates the parent folder. Writers that pick a format from the file name (Pillow, ``np.save``)
    must be given the format or the open handle.

    Example:
        >>> with atomic_write("report.json", binary=False) as handle:
        ...     handle.write("{}")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb" if binary else "w", encoding=None if binary else "utf-8") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically. Returns ``path``."""
    with atomic_write(path, binary=False) as handle:
        handle.write(text)
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write bytes atomically. Returns ``path``."""
    with atomic_write(path) as handle:
        handle.write(data)
    return Path(path)

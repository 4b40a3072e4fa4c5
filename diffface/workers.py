"""Worker processes that end with their parent.

A job killed with SIGKILL cannot stop its DataLoader workers, and torch's own check (between items, on
the index queue) misses a worker busy in a long item or blocked on a full result queue: such a worker
lives on, holding its memory, forever. :func:`die_with_parent` closes that gap twice: on Linux the
kernel sends the worker SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and everywhere a
daemon thread polls the parent's pid and kills the worker once the parent is gone (which also covers a
parent that died before the request was made).

Use it as the DataLoader's ``worker_init_fn``::

    DataLoader(dataset, num_workers=2, worker_init_fn=partial(worker_dies_with_parent, os.getpid()))

Linux sends the signal when the *thread* that started the worker exits, so create the workers from a
thread that lives as long as the job (the main thread, as ``diffface fit`` does).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _request_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def watch_parent(parent_pid: int, poll_s: float = 1.0) -> threading.Thread:
    """Start a daemon thread that SIGKILLs this process once its parent is no longer ``parent_pid``
    (checked every ``poll_s`` seconds). Returns the thread."""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(poll_s)

    thread = threading.Thread(target=watch, name=f"dies-with-{parent_pid}", daemon=True)
    thread.start()
    return thread


def die_with_parent(parent_pid: int, poll_s: float = 1.0) -> bool:
    """Make this process end when its parent ``parent_pid`` ends (see the module docstring).

    Returns:
        whether the kernel's parent-death signal was set (the polling thread runs either way).
    """
    kernel = _request_death_signal()
    watch_parent(parent_pid, poll_s)  # also ends a process whose parent died before the request
    return kernel


def worker_dies_with_parent(parent_pid: int, worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` (bind ``parent_pid`` with ``functools.partial``, picklable for spawn)."""
    die_with_parent(parent_pid)

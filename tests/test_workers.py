"""Processes that die with their parent (diffface.workers): the kernel's signal and the polling fallback."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# the child starts a grandchild that arms one mechanism, then waits to be killed with SIGKILL
CHILD = textwrap.dedent("""
    import subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]])
    print(grandchild.pid, flush=True)
    time.sleep(120)
""")
GRANDCHILD = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from diffface import workers
    if sys.argv[1] == "poll":  # the fallback alone
        workers.watch_parent(os.getppid(), poll_s=0.1)
    else:
        assert workers.die_with_parent(os.getppid(), poll_s=60.0)  # the kernel's signal (polling too slow to count)
    Path(sys.argv[2]).write_text("armed")
    time.sleep(120)
""")


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.parametrize("mechanism", ["poll", "kernel"])
def test_a_process_dies_within_seconds_of_its_parent(mechanism, tmp_path):
    armed = tmp_path / "armed"
    child = subprocess.Popen([sys.executable, "-c", CHILD, GRANDCHILD, mechanism, str(armed)],
                             stdout=subprocess.PIPE, text=True)
    grandchild = int(child.stdout.readline())
    try:
        deadline = time.monotonic() + 60
        while not armed.exists() and time.monotonic() < deadline and _alive(grandchild):
            time.sleep(0.1)
        assert armed.exists() and _alive(grandchild)
        child.kill()
        child.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _alive(grandchild) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(grandchild), f"{mechanism}: the grandchild outlived its parent"
    finally:
        child.kill()
        if _alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)

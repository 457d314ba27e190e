"""cgroups (v1, as root) for the deployment tests: limits as a container has them, and
a CPU group of a test's own.

Embedded dask workers run at nice 19 (stem_explorer.engine.worker_setup) so that a
notebook and its browser stay responsive; on a machine busy with other work that
starves them, and a notebook waiting a minute for its first image times out. A CPU
cgroup of their own, as a container or a systemd user slice gives, ranks that nice
value only within the group, which as a whole weighs as one ordinary process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

#: Tests that mount file systems in a private mount namespace (a read-only folder, a
#: small tmpfs, a container's view of its cgroups).
needs_mounts = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a private mount namespace",
)

#: Run "$@" in the cgroups $1 (memory) and $2 (cpu), seeing them as a container sees its
#: own: a private mount namespace with them at /sys/fs/cgroup/memory and
#: /sys/fs/cgroup/cpu,cpuacct, where dask reads its memory limit and CPU count. $3 is
#: an empty folder for staging the mounts.
CONTAINER_VIEW = """
echo $$ > "$1/cgroup.procs"; echo $$ > "$2/cgroup.procs"
mkdir "$3/memory" "$3/cpu"; mount --bind "$1" "$3/memory"; mount --bind "$2" "$3/cpu"
mount -t tmpfs tmpfs /sys/fs/cgroup; mkdir /sys/fs/cgroup/memory "/sys/fs/cgroup/cpu,cpuacct"
mount --bind "$3/memory" /sys/fs/cgroup/memory; mount --bind "$3/cpu" "/sys/fs/cgroup/cpu,cpuacct"
shift 3; exec "$@"
"""
#: Run "$@" in the cgroup $1.
ENTER = 'echo $$ > "$1/cgroup.procs"; shift; exec "$@"'


def own_cgroup(controller: str) -> Path | None:
    """This process's cgroup v1 folder of ``controller``, if root may make groups there."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            folder = Path("/sys/fs/cgroup") / controller / path.lstrip("/")
            return folder if os.geteuid() == 0 and (folder / "cgroup.procs").exists() else None
    return None


def cgroups_available() -> bool:
    """Root, cgroup v1 memory and cpu controllers, and unshare(1) for a container's view."""
    return own_cgroup("memory") is not None and own_cgroup("cpu") is not None and shutil.which("unshare") is not None


def _remove_group(group: Path) -> None:
    """Remove a cgroup this test made, once the processes of the run in it are gone."""
    procs = group / "cgroup.procs"
    deadline = time.monotonic() + 30
    while procs.read_text().split() and time.monotonic() < deadline:
        time.sleep(0.2)  # processes of the run still exiting (dask's workers, trackers)
    for pid in procs.read_text().split():  # left behind by the run, which started them
        os.kill(int(pid), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while procs.read_text().split() and time.monotonic() < deadline:
        time.sleep(0.1)
    group.rmdir()


@contextlib.contextmanager
def new_cgroup(controller: str, name: str):
    """A child cgroup of this process's, removed afterwards (with what still runs in it)."""
    group = own_cgroup(controller) / name
    group.mkdir()
    try:
        yield group
    finally:
        _remove_group(group)


@contextlib.contextmanager
def own_cpu_group(name: str):
    """A command prefix running a process in a CPU cgroup of its own (no quota); an
    empty prefix where cgroups are not available."""
    if own_cgroup("cpu") is None:
        yield []
        return
    with new_cgroup("cpu", name) as group:
        yield [shutil.which("sh"), "-c", ENTER, "sh", str(group)]

"""Run a command with a folder mounted differently (read-only, a tiny tmpfs), in a
private mount namespace that goes away with the process: real file-system errors
(EROFS, ENOSPC) for tests that run as root, whom mode bits do not stop."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

#: sh -c script: $0 is the folder, $1 the mount command's options, the rest the command
_SCRIPT = 'folder=$0; how=$1; shift; mount $how "$folder" "$folder" && exec "$@"'


def run_with_mount(folder: Path, how: str, argv: list, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``argv`` with ``folder`` mounted by ``mount <how> folder folder``, e.g.
    ``"--bind -o ro"`` (read-only) or ``"-t tmpfs -o size=64k"`` (a full disk soon)."""
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"needs unshare --mount (root or CAP_SYS_ADMIN): {probe.stderr.decode().strip()}")
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", _SCRIPT, str(folder), how, *argv],
        capture_output=True, text=True, timeout=timeout,
    )

"""The build and install commands the deployment tests run, which the Dockerfile must
run too (tests/test_dockerfile.py compares them)."""

from __future__ import annotations

#: The extra a user installs the wheel with.
USER_EXTRA = "jupyter"


def build_command(outdir, srcdir=".", *, offline: bool = False) -> list[str]:
    """``python -m build``: the sdist, then the wheel built from the sdist. The tests run
    offline, so without build isolation (the backend comes from their environment)."""
    return ["python", "-m", "build", *(["--no-isolation"] if offline else []), "--outdir", str(outdir), str(srcdir)]


def install_target(wheel) -> str:
    """What ``pip install`` is given: the wheel with the user's extra."""
    return f"{wheel}[{USER_EXTRA}]"

"""A second local OS user for the security tests: made with ``useradd``, removed after.

Tests use it to do what any other user of a shared machine (a JupyterHub node, a lab
workstation) could: read ``/proc``, connect to ports on 127.0.0.1. Needs root; the
tests that use it are skipped otherwise.
"""

import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import uuid

import pytest


class OtherUser:
    """A user with no groups in common with the tests, and a home of its own.

    ``python`` is an interpreter of this Python version that the user may run, with
    the test environment's packages (dask, cryptography) importable.
    """

    def __init__(self, name: str, home: str):
        entry = pwd.getpwnam(name)
        self.name, self.uid, self.gid, self.home = name, entry.pw_uid, entry.pw_gid, home
        self.python = None

    def run(self, args, timeout: float = 120) -> subprocess.CompletedProcess:
        """``args`` run as this user (text output captured), from its home."""
        site = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": self.home, "PYTHONPATH": os.pathsep.join(site)}
        return subprocess.run(args, user=self.uid, group=self.gid, extra_groups=[], env=env, cwd=self.home,
                              capture_output=True, text=True, timeout=timeout)

    def find_python(self) -> str:
        """This Python version as the user can run it (the test venv's may sit in a
        folder only its owner can enter), or skip."""
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        candidates = [os.path.realpath(sys.executable), shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")]
        for candidate in dict.fromkeys(c for c in candidates if c):
            try:
                if self.run([candidate, "-c", "import distributed, cryptography"]).returncode == 0:
                    return candidate
            except PermissionError:  # e.g. under /root
                continue
        pytest.skip(f"no {version} that user {self.name} can run with this environment's packages")


@pytest.fixture(scope="module")
def other_user():
    """A fresh OS user (``useradd``), deleted with its home after the module's tests."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd to create a second user")
    name = f"stx{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    home = tempfile.mkdtemp(prefix=f"{name}-home-")  # 0700, then the user's own
    try:
        user = OtherUser(name, home)
        os.chown(home, user.uid, user.gid)
        user.python = user.find_python()
        yield user
    finally:
        shutil.rmtree(home, ignore_errors=True)
        subprocess.run(["userdel", name], capture_output=True)

"""Fresh virtual environments for the deployment tests, without a package index.

A new venv gets, from the environment running the tests, exactly the distributions a
set of requirements needs (the closure of their ``Requires-Dist``, markers and extras
evaluated), linked into its site-packages as pip would have installed them; then the
package under test is installed into it with ``pip --no-index``. pip resolves the
requirements against what is linked, so a dependency the metadata forgets fails the
install (or the import), and nothing of the test environment leaks in: no editable
install, no test-only packages. Linking instead of downloading keeps it to seconds
and works offline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

HERE_SITE = Path(sysconfig.get_paths()["purelib"])
HERE_PREFIX = Path(sys.prefix)
SELF = canonicalize_name("stem_explorer")


def wheel_requirements(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(name).decode("utf-8")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def closure(requirements: list[str], extras: set[str], own: list[str]) -> set[str]:
    """Names of the installed distributions ``requirements`` need, recursively.

    ``own`` are the requirements of the package under test (its extras refer to
    them); a requirement on it is expanded through them instead of looked up.
    """
    found: set[str] = set()
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        req, active = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (active or {""})):
            continue
        name = canonicalize_name(req.name)
        if name == SELF:
            todo += [(Requirement(r), set(req.extras)) for r in own]
            continue
        dist = metadata.distribution(name)  # PackageNotFoundError: the test env lacks it
        key = (name, frozenset(req.extras))
        if key in found:
            continue
        found.add(key)
        todo += [(Requirement(r), set(req.extras)) for r in dist.requires or []]
    return {name for name, _ in found}


def link_distributions(names: set[str], site: Path) -> None:
    """Symlink the files of distributions ``names`` into ``site`` (a venv's site-packages).

    Top-level packages are linked as folders; data files outside site-packages
    (``share/jupyter/...``) file by file; console scripts are skipped (their shebang
    names this environment's interpreter).
    """
    prefix = site.parents[2]
    for name in sorted(names):
        dist = metadata.distribution(name)
        tops = set()
        for file in dist.files or []:
            parts = Path(file).parts
            if parts[0] != "..":
                tops.add(parts[0])
                continue
            source = (HERE_SITE / file).resolve()
            relative = source.relative_to(HERE_PREFIX.resolve()) if source.is_relative_to(HERE_PREFIX.resolve()) else None
            if relative is None or relative.parts[0] != "share":
                continue
            target = prefix / relative
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(source)
        for top in tops:
            target = site / top
            if not os.path.lexists(target) and (HERE_SITE / top).exists():
                target.symlink_to(HERE_SITE / top)


class FreshVenv:
    """A venv at ``path`` with no pip of its own (the test environment's pip drives it)."""

    def __init__(self, path: Path):
        self.path = path
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
        self.python = path / "bin" / "python"
        self.site = Path(
            subprocess.run(
                [str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                check=True, capture_output=True, text=True,
            ).stdout.strip()
        )
        # only the venv's own scripts: Node.js (and everything else of the system) is
        # out of reach while the package is installed and run
        self.env = dict(os.environ, PATH=str(path / "bin"), VIRTUAL_ENV=str(path))
        self.env.pop("PYTHONPATH", None)

    def provide(self, requirements: list[str], extras: set[str], own: list[str]) -> None:
        """Link the installed closure of ``requirements`` into the venv."""
        link_distributions(closure(requirements, extras, own), self.site)

    def pip_install(self, *args: str) -> subprocess.CompletedProcess:
        """``pip install --no-index ARGS`` into the venv, with its PATH (no Node.js)."""
        return subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(self.python), "--disable-pip-version-check",
             "install", "--no-index", *args],
            env=self.env, capture_output=True, text=True, timeout=300,
        )

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """Run ``args`` (a venv script name or a path) in the venv's environment."""
        kwargs.setdefault("env", self.env)
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 300)
        return subprocess.run(list(args), **kwargs)

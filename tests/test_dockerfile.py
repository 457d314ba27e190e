"""The Dockerfile, which cannot be built here (no Docker): it parses with Docker's own
parser (the ``dockerfile`` package wraps buildkit's), it builds on the Jupyter Docker
Stacks, and its build and install commands are those the packaging tests run
(tests/deploy_commands.py)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from deploy_commands import USER_EXTRA, build_command

dockerfile = pytest.importorskip("dockerfile", reason="pip install -e '.[test]' (Docker's Dockerfile parser)")

ROOT = Path(__file__).resolve().parents[1]
#: Instructions Docker's builder knows (the parser accepts any word).
INSTRUCTIONS = {"FROM", "RUN", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "LABEL", "EXPOSE", "CMD",
                "ENTRYPOINT", "VOLUME", "SHELL", "HEALTHCHECK", "STOPSIGNAL", "ONBUILD"}


@pytest.fixture(scope="module")
def commands():
    return dockerfile.parse_file(str(ROOT / "Dockerfile"))


def shell_steps(commands) -> list[list[str]]:
    """Every ``&&``-joined step of every RUN, split like a shell would (quotes kept)."""
    return [shlex.split(step) for c in commands if c.cmd == "RUN" for step in c.value[0].split("&&")]


def test_dockerfile_parses_with_known_instructions(commands):
    assert commands and {c.cmd for c in commands} <= INSTRUCTIONS


def test_it_builds_on_the_jupyter_docker_stacks(commands):
    (base,) = [c.value[0] for c in commands if c.cmd == "ARG" and c.value[0].startswith("BASE=")]
    assert base.startswith("BASE=quay.io/jupyter/minimal-notebook:")
    stages = [c.value for c in commands if c.cmd == "FROM"]
    assert [s[0] for s in stages] == ["${BASE}", "${BASE}"] and stages[0][1:] == ("AS", "build")
    assert not any(c.cmd in ("CMD", "ENTRYPOINT") for c in commands)  # the stack's start-notebook.py serves it


def test_its_commands_are_the_tested_ones(commands):
    steps = shell_steps(commands)
    assert ["bash", "scripts/build_js.sh"] in steps  # as scripts/setup.sh builds the bundle
    assert build_command("/tmp/dist") in steps  # as tests/test_packaging.py builds (there offline)
    (install,) = [s for s in steps if s[:2] == ["pip", "install"]]
    assert install[2:] == ["--no-cache-dir", f"$(ls /tmp/dist/stem_explorer-*.whl)[{USER_EXTRA}]"]
    copied = [c.value[0] for c in commands if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)]
    assert all((ROOT / source).exists() for source in copied), copied
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "node_modules", "sample_data", "build", "dist"} <= set(ignored)

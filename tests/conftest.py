"""Shared pytest fixtures."""

import json
from pathlib import Path

import pytest

from hdfs_fixtures import hdfs, hdfs_client  # noqa: F401  (session-scoped HDFS test cluster)
from binder_fixtures import binder, binder_notebooks  # noqa: F401  (Binder environment, its notebook runs)
from hub_stack import hub  # noqa: F401  (JupyterHub + dask-gateway on 127.0.0.1, real OS users)

#: Real detector files with reference results, beside the checkout (``../shared``);
#: not part of the project, so tests skip when the folder is absent.
REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


class RealData:
    """The real-data folder: ``path`` and the parsed ``MANIFEST.json`` by key."""

    def __init__(self, path: Path):
        self.path = path
        self.manifest = {e["key"]: e for e in json.loads((path / "MANIFEST.json").read_text())}

    def entry(self, key: str) -> dict:
        """The manifest entry ``key``; skips the test when the entry is missing."""
        if key not in self.manifest:
            pytest.skip(f"real-data set {key!r} is not in {self.path / 'MANIFEST.json'}")
        return self.manifest[key]

    def file(self, relative: str) -> Path:
        """A file of the folder; skips the test when it is missing."""
        path = self.path / relative
        if not path.exists():
            pytest.skip(f"real-data file {path} is absent")
        return path


@pytest.fixture(scope="session")
def realdata() -> RealData:
    """The real detector files of ``../shared/realdata`` (skip when absent)."""
    if not (REALDATA / "MANIFEST.json").is_file():
        pytest.skip(
            f"real detector data not found at {REALDATA} (a fresh clone has no "
            f"../shared/realdata); the tests that use it are skipped"
        )
    return RealData(REALDATA)

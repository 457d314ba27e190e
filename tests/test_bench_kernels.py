"""Smoke test of the mask-kernel calibration (``python -m benchmarks --kernels``) at
``--small`` size: every (data set, mask, path) row is timed through the forced path
and names the path ``auto`` picks. Checks the wiring, not the figures."""

import json
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package

from benchmarks import kernels, runner  # noqa: E402


def test_small_kernel_calibration(tmp_path, capsys):
    out = tmp_path / "kernels.jsonl"
    argv = ["--kernels", "--small", "--repeat", "1", "--dir", str(tmp_path), "--only", "spans", "columns", "--json", str(out)]
    assert runner.main(argv) == 0
    table = capsys.readouterr().out
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["kind"] == "run" and records[0]["threads"] == 1
    rows = [r for r in records if r["kind"] == "kernel"]
    assert {(r["data"], r["mask"], r["path"]) for r in rows} == {
        (d, m, p) for d in kernels.DATA for m in kernels.MASKS for p in ("spans", "columns")
    }
    for r in rows:
        assert r["kernel"] == r["path"]  # the suite's masks are binary: the forced path alone
        assert r["gbps"] > 0 and r["ns_per_frame"] > 0
        assert set(r["auto"].split("+")) <= {"spans", "columns", "sparse", "dense"}
    assert {r["auto"] for r in rows if r["mask"] == "rings16"} == {"columns"}
    assert sum(line.startswith("| ") for line in table.splitlines()) == len(rows) + 1  # header + rows

"""Smoke test of the descan benchmark (``python -m benchmarks --descan``) at
``--small`` size: every (data set, mask, mode) row, its ratio to the uncorrected run of
the same data and mask, and the table. Checks the wiring, not the figures."""

import pytest

from bench_helpers import run_benchmark
from benchmarks import descan

pytestmark = [pytest.mark.slow]


def test_small_descan_benchmark(tmp_path, capsys):
    table, records = run_benchmark("descan", ["--small", "--repeat", "1"], tmp_path, capsys)
    rows = [r for r in records if r["kind"] == "descan"]
    assert {(r["data"], r["mask"], r["mode"]) for r in rows} == {
        (d, m, mode) for d in descan.DATA for m in descan.MASKS for mode in descan.MODES
    }
    for r in rows:
        assert r["gbps"] > 0 and r["ratio"] > 0 and r["best_ratio"] > 0
        assert (r["ratio"] == 1.0) == (r["mode"] == "none")
    assert sum(line.startswith("| ") for line in table.splitlines()) == len(rows) + 1  # header + rows


def test_the_corrections_span_the_planned_reach():
    plane, noisy = descan.descans((64, 32))["plane"], descan.descans((64, 32))["noisy"]
    shifts = plane.shifts_for((64, 32))
    assert abs(shifts).max() <= descan.PLANE_REACH and abs(shifts).max() > descan.PLANE_REACH / 2
    assert (noisy.shifts_for((64, 32)) - shifts).std() == pytest.approx(1.0, rel=0.1)

"""Smoke test of the monitoring overhead benchmark (``python -m benchmarks --monitoring``)
at ``--small`` size: each workload timed with the task meter and without, and the
meter's own time a task. Checks the wiring, not the figures."""

import pytest

from bench_helpers import run_benchmark
from benchmarks import monitoring

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_small_monitoring_benchmark(tmp_path, capsys):
    table, records = run_benchmark("monitoring", ["--small", "--repeat", "1"], tmp_path, capsys)
    rows = [r for r in records if r["kind"] == "monitoring"]
    assert [r["workload"] for r in rows] == list(monitoring.WORKLOADS)
    for r in rows:
        assert r["on"]["runs"] == r["off"]["runs"] == 1 and r["tasks"] > 8
        assert r["ratio"] == pytest.approx(r["on"]["median_s"] / r["off"]["median_s"])
    (meter,) = [r for r in records if r["kind"] == "meter"]
    assert 0 < meter["median_us"] < 10_000
    assert "meter alone" in table and sum(line.startswith("| ") for line in table.splitlines()) == len(rows) + 1

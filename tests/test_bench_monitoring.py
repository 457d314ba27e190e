"""Smoke test of the monitoring overhead benchmark (``python -m benchmarks --monitoring``)
at ``--small`` size: each workload timed with the task meter and without, and the
meter's own time a task. Checks the wiring, not the figures."""

import json
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package

from benchmarks import monitoring, runner  # noqa: E402


def test_small_monitoring_benchmark(tmp_path, capsys):
    out = tmp_path / "monitoring.jsonl"
    assert runner.main(["--monitoring", "--small", "--repeat", "1", "--dir", str(tmp_path), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["kind"] == "run" and records[0]["benchmark"] == "monitoring"
    rows = [r for r in records if r["kind"] == "monitoring"]
    assert [r["workload"] for r in rows] == list(monitoring.WORKLOADS)
    for r in rows:
        assert r["on"]["runs"] == r["off"]["runs"] == 1 and r["tasks"] > 8
        assert r["ratio"] == pytest.approx(r["on"]["median_s"] / r["off"]["median_s"])
    (meter,) = [r for r in records if r["kind"] == "meter"]
    assert 0 < meter["median_us"] < 10_000
    assert "meter alone" in table and sum(line.startswith("| ") for line in table.splitlines()) == len(rows) + 1

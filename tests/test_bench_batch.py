"""Smoke test of the batch benchmark (``python -m benchmarks --batch``) at a tiny size:
files written, the single-file limit, both batches and the report. Checks the wiring,
not the figures."""

import pytest

from bench_helpers import run_benchmark

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_tiny_batch_benchmark(tmp_path, capsys):
    argv = ["--files", "3", "--file-mib", "1", "--big-files", "2", "--big-mib", "2", "--repeat", "1", "--workers", "1"]
    table, records = run_benchmark("batch", argv, tmp_path, capsys)
    rows = {r["case"]: r for r in records if r.get("kind") == "batch"}
    assert set(rows) == {"single file", "small files", "big files"}
    assert rows["small files"]["files"] == 3 and rows["small files"]["bytes"] == 3 * 2**20
    assert rows["big files"]["bytes"] == 2 * 2 * 2**20 and rows["big files"]["fraction"] > 0
    assert all(r["gbps"] > 0 for r in rows.values()) and "overhead_s" in rows["small files"]
    assert rows["small files"]["client_cpu_s"] > 0 and rows["small files"]["workers_cpu_s"] > 0
    assert [r["files"] for r in records if r.get("kind") == "warm-up"] == [2]
    assert sum(line.startswith("| ") for line in table.splitlines()) == 1 + 3  # header, three rows
    assert not (tmp_path / "batch_results").exists()

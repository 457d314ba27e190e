"""Smoke test of the benchmark suite: a ``--small`` run through ``stem-explorer bench``.

Checks the wiring (data sets created, every workload timed, the references and
latency lines present, JSON lines that parse), not the figures.
"""

import json

import pytest

from stem_explorer.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_small_benchmark_writes_a_json_line_per_workload(tmp_path, capsys, monkeypatch):
    from benchmarks import data

    monkeypatch.setattr(data, "SMALL_NAV", (16, 16))  # the wiring, on 8 MiB files (not 128 MiB)
    out = tmp_path / "bench.jsonl"
    argv = ["bench", "--small", "--repeat", "1", "--dir", str(tmp_path / "data"), "--format", "json", "--json", str(out)]
    assert main(argv) == 0
    from benchmarks.workloads import all_workloads  # importable now: `bench` found the suite

    printed = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in printed]
    assert [json.loads(line) for line in out.read_text().splitlines()] == records

    rows = {r["workload"]: r for r in records if r["kind"] == "workload"}
    assert set(rows) == {w.id for w in all_workloads()}
    for row in rows.values():
        assert row["runs"] == 1 and 0 < row["min_s"] <= row["median_s"] <= row["max_s"]
        assert row["gbps"] > 0 and row["plain_read_gbps"] > 0 and row["ratio"] > 0
        assert isinstance(row["pass"], bool) and row["target_gbps"] > 0
        assert row["libertem_gbps"] not in (None, "")
    assert rows["disk/hdf5-uint16"]["target_gbps"] == pytest.approx(0.7 * rows["disk/raw-uint16"]["gbps"])

    kinds = [r["kind"] for r in records]
    assert kinds.count("plain_read") == 3 and kinds.count("run") == 1
    assert kinds.count("first_partial") == 1 and kinds.count("cold_start") == 1
    for r in records:
        if r["kind"] == "plain_read":
            assert r["preadv"]["median_gbps"] > 0 and r["mmap_sum"]["median_gbps"] > 0
    cold = next(r for r in records if r["kind"] == "cold_start")
    assert 0 < cold["import_s"] <= cold["session_s"] <= cold["result_s"] <= cold["wall_s"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir() if not p.name.startswith("sample_")) == [
        "f32_16x8x128x128.raw", "u16_16x16x128x128.raw", "u16_16x16x128x128_chunked.h5",
    ]

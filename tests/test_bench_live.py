"""Smoke test of the live acquisition benchmark (``python -m benchmarks --live``) at a
tiny size: simulator process, receiver, session, every acquisition measured and
checked against numpy. Checks the wiring, not the figures."""

import pytest

from bench_helpers import run_benchmark

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def test_tiny_live_benchmark(tmp_path, capsys):
    argv = ["--scan", "2", "8", "--paced-scan", "2", "4", "--fps", "50", "--distinct", "3", "--repeat", "2",
            "--change-scan", "4", "8", "--change-at", "8"]
    table, records = run_benchmark("live", argv, tmp_path, capsys)
    rows = {r["acquisition"]: r for r in records if r.get("kind") == "live"}
    assert set(rows) == {"receive only", "full speed", "paced", "mask change"}
    change = rows.pop("mask change")  # stopped once the new mask covered the first 8 frames exactly
    assert change["frames_dropped"] == 0 and change["mask_change"]["frames_covered"] >= 8
    assert 0 < change["mask_change"]["shown_seconds"] <= change["mask_change"]["seconds"]
    for r in rows.values():
        assert r["frames_received"] == r["n_frames"] and r["frames_dropped"] == 0
        assert r["results_equal_numpy"] is (None if r["acquisition"] == "receive only" else True)
        assert r["receive_gbps"] > 0 and (r["latency_median_s"] is None) == (r["acquisition"] == "receive only")
        assert set(r["cpu_s_per_gb"]) == {"receiver", "workers", "simulator"}
        assert r["buffer_peak_bytes"] <= r["buffer_bytes"]
    assert rows["paced"]["mask_change"]["seconds"] > 0 and rows["paced"]["mask_change"]["frames_covered"] >= 4
    assert rows["full speed"]["n_frames"] == 16 and rows["paced"]["fps"] == 50
    repeats = rows["receive only"]["repeats"]
    assert repeats["runs"] == 2 and rows["receive only"]["cpu_s_per_gb"]["receiver"] == min(repeats["receiver_cpu_s_per_gb"])
    assert "receive only (median of 2)" in table
    assert sum(line.startswith("| ") for line in table.splitlines()) == 1 + 4  # header, four rows

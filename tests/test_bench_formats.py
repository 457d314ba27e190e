"""Smoke test of the detector-format benchmark (``python -m benchmarks --formats``) at
``--small`` size: the files are written, hold the reference's frames, and every row
is timed and compared with raw uint16. Checks the wiring, not the figures."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package

from benchmarks import data, formats  # noqa: E402


def test_small_format_benchmark(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data, "SMALL_NAV", (16, 16))  # the wiring, on 8 MiB files (not 128 MiB)
    out = tmp_path / "formats.jsonl"
    assert formats.main(["--small", "--repeat", "1", "--dir", str(tmp_path), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    records = [json.loads(line) for line in out.read_text().splitlines()]
    rows = [r for r in records if r["kind"] == "format"]
    files = formats.plan(tmp_path, small=True)
    assert {(r["format"], r["workload"]) for r in rows} == {(f.key, w) for f in files for w in formats.WORKLOADS}
    for r in rows:
        assert r["n_frames"] == 16 * 16 and r["sig_shape"] == [128, 128]
        assert r["frames_per_s"] > 0 and r["ratio"] > 0
        assert r["pass"] is None if r["format"] == "raw-uint16" else isinstance(r["pass"], bool)
    assert sum(line.startswith("| ") for line in table.splitlines()) == len(rows) + 1  # header + rows

    # every file holds the reference's frames, in its scan order
    raw = files[0].open()
    expected = raw.read_frames(0, raw.n_frames)
    for f in files[1:]:
        ds = f.open()
        assert ds.shape == raw.shape, f.key
        np.testing.assert_array_equal(ds.read_frames(0, ds.n_frames), expected, err_msg=f.key)
    assert not list(tmp_path.glob(".partial-*"))

"""What a batch (issue 16) does once rather than for every input, and what it may share
between inputs without weakening what it promises: the recipe's analyses validated
once, the summary rewritten less often as it grows, one folder ``fsync`` for the
results files saved together, each input recorded done only after it, and one look
for stale temporaries per batch instead of one per results file."""

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import stem_explorer as se
from stem_explorer import _atomic
from stem_explorer.analyses import base
from stem_explorer.batch import summary as summary_module
from stem_explorer.batch.recipe import as_recipe
from stem_explorer.batch.run import batch
from stem_explorer.batch.summary import Summary
from stem_explorer.batch.writer import ResultsWriter
from stem_explorer.errors import SaveError
from stem_explorer.results import ResultArray, Results

BF = se.masks.Disk(4, 4, 2.5)


def small_results() -> Results:
    return Results({"sum/frame": ResultArray("frame", np.ones((3, 4)), ("det_y", "det_x"))}, {"complete": True})


def test_a_recipe_validates_its_analyses_once_and_builds_fresh_copies_for_each_input(monkeypatch):
    recipe = as_recipe([se.VirtualDetector({"bf": BF}), se.SumFrame()])
    validated = []
    real = base.validate_description
    monkeypatch.setattr(base, "validate_description", lambda *a, **k: (validated.append(a[1]), real(*a, **k))[1])
    first, second, third = recipe.build(), recipe.build(), recipe.build()
    assert len(validated) == 2  # one per analysis, not one per input
    assert first == second == third == [se.VirtualDetector({"bf": BF}), se.SumFrame()]
    assert all(a is not b for a, b in zip(first, second))  # each input's jobs get their own objects
    recipe.analyses = [se.SumFrame().to_dict()]  # a recipe changed after a build is built anew
    assert recipe.build() == [se.SumFrame()] and len(validated) == 3


class Clock:
    """``time.monotonic`` of the summary module, moved by the test."""

    def __init__(self):
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def test_the_summary_is_rewritten_less_often_when_rewriting_it_takes_longer(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(summary_module, "time", clock)
    real_write = _atomic.atomic_write
    slow = {"seconds": 0.0}

    def timed_write(path):  # each of the two files takes ``slow`` seconds of the clock
        clock.now += slow["seconds"] / 2
        return real_write(path)

    monkeypatch.setattr(summary_module, "atomic_write", timed_write)
    summary = Summary(tmp_path, [])

    def rows_written() -> list:
        return [r["input"] for r in json.loads((tmp_path / "summary.json").read_text())]

    summary.set({"input": "a", "output": "a.h5", "status": "done"})  # the first row: written at once
    assert rows_written() == ["a"]
    clock.now += 1.0  # a cheap rewrite: every 0.5 s
    summary.set({"input": "b", "output": "b.h5", "status": "done"})
    assert rows_written() == ["a", "b"]
    slow["seconds"] = 1.0  # this rewrite takes 1 s: the next waits 1 / WRITE_SHARE = 20 s
    clock.now += 1.0
    summary.set({"input": "c", "output": "c.h5", "status": "done"})
    assert rows_written() == ["a", "b", "c"]
    clock.now += 10.0
    summary.set({"input": "d", "output": "d.h5", "status": "done"})
    assert rows_written() == ["a", "b", "c"]  # not due yet: the row waits in memory
    clock.now += 10.0
    summary.set({"input": "e", "output": "e.h5", "status": "done"})
    assert rows_written() == ["a", "b", "c", "d", "e"]
    summary.write()  # the end of the batch writes whatever is due or not
    assert len(rows_written()) == 5


class Events(list):
    """A list that carries the ``note`` of :func:`syncs`."""

    note: dict


@pytest.fixture
def syncs(monkeypatch):
    """Every ``fsync`` of the atomic writes, in order, as ``(path, note())`` once
    done; ``note`` (settable) says what else held then."""
    events = Events()
    real = _atomic._fsync
    note = {"fn": lambda: None}

    def recording(path):
        real(path)
        events.append((Path(path), note["fn"]()))

    monkeypatch.setattr(_atomic, "_fsync", recording)
    events.note = note
    return events


def test_saves_queued_together_share_one_folder_sync_and_are_done_only_after_it(tmp_path, syncs):
    writer = ResultsWriter()
    started, release = threading.Event(), threading.Event()

    def first_save():
        started.set()
        assert release.wait(60)
        return small_results().save(tmp_path / "first.h5")

    try:
        futures = [writer.submit(first_save)]
        assert started.wait(60)  # the writer is busy: these four queue up meanwhile
        futures += [writer.submit(lambda i=i: small_results().save(tmp_path / f"r{i}.h5")) for i in range(4)]
        syncs.note["fn"] = lambda: [f.done() for f in futures]
        release.set()
        assert [f.result(60) for f in futures] == [tmp_path / "first.h5", *(tmp_path / f"r{i}.h5" for i in range(4))]
    finally:
        writer.close()
    folder_syncs = [(k, done) for k, (path, done) in enumerate(syncs) if path == tmp_path]
    assert len(folder_syncs) == 2  # the first save alone, then the four queued meanwhile
    assert len(syncs) == 5 + 2  # each file's data, then the two folder syncs
    assert folder_syncs[1][1] == [True, False, False, False, False]  # none of the four done before its name is durable
    assert all(Results.load(tmp_path / f"r{i}.h5")["sum/frame"].data.sum() == 12 for i in range(4))


def test_a_failed_save_fails_its_own_future_only(tmp_path):
    writer = ResultsWriter()
    try:
        bad = writer.submit(lambda: small_results().save(tmp_path))  # a folder
        good = writer.submit(lambda: small_results().save(tmp_path / "good.h5"))
        assert good.result(60) == tmp_path / "good.h5"
        assert isinstance(bad.exception(60), SaveError) and "it is a folder" in str(bad.exception())
    finally:
        writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(lambda: None)


@pytest.mark.cluster
def test_a_batch_records_an_input_done_only_once_its_results_file_and_name_are_synced(tmp_path, syncs):
    from distributed import Client, LocalCluster

    (tmp_path / "in").mkdir()
    for i in range(6):
        np.save(tmp_path / "in" / f"s{i}.npy", np.random.default_rng(i).integers(0, 1000, (4, 5, 9, 8)).astype(np.uint16))
    out = tmp_path / "out"
    recorded = []

    def on_result(event):  # the input is recorded done: its file must be durable by now
        recorded.append((Path(event.data["output"]), len(syncs)))

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        report = batch(tmp_path / "in", [se.VirtualDetector({"bf": BF}), se.SumFrame()], out, client=client,
                       hooks=[("on_result", on_result)], progress=False, concurrency=4)
    assert report.count("done") == 6 and len(recorded) == 6
    for output, n_synced in recorded:
        before = [path for path, _note in syncs[:n_synced]]
        data = [k for k, path in enumerate(before) if path.name.startswith(f".{output.name}.stem-explorer-")]
        assert data, f"{output.name} was recorded done before its data was synced"
        assert out in before[data[-1] + 1:], f"{output.name} was recorded done before its name was synced"


def test_deferred_folder_syncs_nest_and_a_folder_gone_meanwhile_is_a_save_error(tmp_path, syncs):
    with _atomic.folder_syncs_deferred():
        small_results().save(tmp_path / "a.h5")
        with _atomic.folder_syncs_deferred():
            small_results().save(tmp_path / "b.h5")
        assert [path == tmp_path for path, _note in syncs] == [False, False, True]  # b's name: at the inner end
    assert [path == tmp_path for path, _note in syncs] == [False, False, True, True]
    small_results().save(tmp_path / "c.h5")  # outside a block: synced at once, as always
    assert [path == tmp_path for path, _note in syncs][-2:] == [False, True]
    gone = tmp_path / "gone"
    with pytest.raises(SaveError, match=f"cannot save in {str(gone)!r}: No such file or directory"):
        with _atomic.folder_syncs_deferred():
            small_results().save(gone / "d.h5")
            shutil.rmtree(gone)


def test_a_writer_sweeps_its_folder_of_stale_temporaries_once_not_at_every_save(tmp_path, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = _atomic._host_tag()
    stale = [tmp_path / f".{name}.stem-explorer-{host}-{dead.pid}-0123abcd.tmp" for name in ("a.h5", "b.h5", "c.h5")]
    kept = [tmp_path / f".d.h5.stem-explorer-{host}-{os.getpid()}-0123abcd.tmp",  # its writer runs: this process
            tmp_path / "user.tmp", tmp_path / f"e.h5.stem-explorer-{host}-{dead.pid}-0123abcd.tmp"]  # no leading dot
    for path in stale + kept:
        path.write_text("x")
    looks = []
    real_scandir = _atomic.os.scandir
    monkeypatch.setattr(_atomic.os, "scandir", lambda folder: (looks.append(Path(folder)), real_scandir(folder))[1])
    writer = ResultsWriter(folder=tmp_path)
    try:
        for name in ("a.h5", "x.h5", "y.h5"):
            writer.submit(lambda name=name: small_results().save(tmp_path / name)).result(60)
    finally:
        writer.close()
    assert looks == [tmp_path]  # one look at the folder for the three saves
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    small_results().save(tmp_path / "z.h5")  # outside the writer: a save looks for its own, as always
    assert looks == [tmp_path, tmp_path]

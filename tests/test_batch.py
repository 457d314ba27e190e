"""Batches over many inputs (issue 16), on one real multi-process cluster: results
equal to numpy per input, the summary, resume, output names, the recipe's errors,
hooks, the progress views, and a watched folder that disappears."""

import csv
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import stem_explorer as se
from stem_explorer.batch.recipe import BatchRecipe, load_batch_recipe
from stem_explorer.batch.run import batch
from stem_explorer.errors import AnalysisError, DataSetNotFoundError, OptionError

pytestmark = pytest.mark.cluster

BF = se.masks.Disk(4, 4, 2.5)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as c:
        yield c


def recipe() -> list:
    return [se.VirtualDetector({"bf": BF}), se.SumFrame()]


def write_scan(path: Path, seed: int, nav=(4, 5), sig=(9, 8)) -> np.ndarray:
    data = np.random.default_rng(seed).integers(0, 1000, nav + sig).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, data)
    return data


def expected(data: np.ndarray) -> dict:
    mask = BF.rasterize(data.shape[2:])
    return {"vd/bf": np.einsum("abyx,yx->ab", data.astype(np.float64), mask), "sum/frame": data.sum(axis=(0, 1))}


def check_results(path: Path, data: np.ndarray) -> se.Results:
    results = se.Results.load(path)
    for key, value in expected(data).items():
        np.testing.assert_allclose(results[key].data, value, rtol=1e-6)
    return results


def read_csv(out: Path) -> dict:
    with open(out / "summary.csv", newline="") as f:
        return {Path(row["input"]).name: row for row in csv.DictReader(f)}


def test_each_input_gets_results_equal_to_numpy_and_a_summary_row(client, tmp_path):
    scans = {f"scan_{i}.npy": write_scan(tmp_path / "in" / f"scan_{i}.npy", i, nav=(3 + i, 4)) for i in range(3)}
    (tmp_path / "in" / "broken.npy").write_bytes(b"not an array")
    (tmp_path / "in" / "notes.txt").write_text("a sidecar, not an input")
    report = batch(tmp_path / "in", recipe(), tmp_path / "out", client=client, progress=False)

    assert report.count("done") == 3 and len(report.failed) == 1 and not report.ok
    rows = read_csv(tmp_path / "out")
    assert set(rows) == {*scans, "broken.npy"}
    assert rows["broken.npy"]["status"] == "failed" and "broken.npy" in rows["broken.npy"]["error"]
    assert not (tmp_path / "out" / "broken.results.h5").exists()
    for name, data in scans.items():
        row = rows[name]
        results = check_results(tmp_path / "out" / row["output"], data)
        assert row["output"] == name.replace(".npy", ".results.h5") and row["status"] == "done"
        assert row["scan_shape"] == "x".join(map(str, data.shape[:2])) and row["detector_shape"] == "9x8"
        assert int(row["bytes"]) == data.nbytes and float(row["seconds"]) > 0 and row["workers"]
        assert float(row["mean vd/bf"]) == pytest.approx(expected(data)["vd/bf"].mean())
        assert float(row["mean sum/frame"]) == pytest.approx(expected(data)["sum/frame"].mean())
        recorded = results.provenance["batch"]
        info = os.stat(tmp_path / "in" / name)
        assert recorded["input"] == {"path": str(tmp_path / "in" / name), "size": info.st_size, "mtime_ns": info.st_mtime_ns}
        assert recorded["recipe"]["analyses"] == [a.to_dict() for a in recipe()]
        assert results.provenance["complete"] is True
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == report.rows


def test_a_rerun_keeps_up_to_date_results_and_redoes_changed_inputs(client, tmp_path, monkeypatch):
    first = {i: write_scan(tmp_path / "in" / f"s{i}.npy", i) for i in range(3)}
    batch(tmp_path / "in", recipe(), tmp_path / "out", client=client, progress=False)
    saved = {i: os.stat(tmp_path / "out" / f"s{i}.results.h5").st_mtime_ns for i in range(3)}

    changed = write_scan(tmp_path / "in" / "s1.npy", 99)  # rewritten: new size/mtime
    report = batch(tmp_path / "in", recipe(), tmp_path / "out", client=client, progress=False)
    statuses = {Path(r["input"]).name: r["status"] for r in report.rows}
    assert statuses == {"s0.npy": "kept", "s1.npy": "done", "s2.npy": "kept"}
    assert os.stat(tmp_path / "out" / "s0.results.h5").st_mtime_ns == saved[0]
    check_results(tmp_path / "out" / "s1.results.h5", changed)
    kept = read_csv(tmp_path / "out")["s0.npy"]
    assert float(kept["mean vd/bf"]) == pytest.approx(expected(first[0])["vd/bf"].mean()) and kept["scan_shape"] == "4x5"

    def no_cluster(*args, **kwargs):
        raise AssertionError("a batch with nothing to compute started a cluster")

    monkeypatch.setattr(sys.modules["stem_explorer.batch.run"], "start_local_cluster", no_cluster)
    report = batch(tmp_path / "in", recipe(), tmp_path / "out", progress=False)  # no client: none needed
    assert report.count("kept") == 3

    other = [se.VirtualDetector({"bf": BF}, name="bf2")]
    report = batch(tmp_path / "in", other, tmp_path / "out", client=client, progress=False)
    assert report.count("done") == 3  # another recipe: computed again


def test_inputs_with_the_same_name_get_distinct_deterministic_outputs(client, tmp_path):
    a = write_scan(tmp_path / "a" / "scan.npy", 1)
    b = write_scan(tmp_path / "b" / "scan.npy", 2)
    foreign = tmp_path / "out" / "c.results.h5"
    foreign.parent.mkdir()
    foreign.write_bytes(b"the user's own file")
    c = write_scan(tmp_path / "c.npy", 3)
    inputs = [tmp_path / "a" / "scan.npy", str(tmp_path / "b" / "*.npy"), tmp_path / "c.npy", tmp_path / "a"]
    report = batch(inputs, recipe(), tmp_path / "out", client=client, progress=False)
    outputs = [r["output"] for r in report.rows]
    assert len(report.rows) == 3 and len(set(outputs)) == 3  # a/scan.npy once, though named twice
    assert all(o.startswith("scan-") for o in outputs[:2]) and outputs[2].startswith("c-")
    assert foreign.read_bytes() == b"the user's own file"  # never replaced
    for output, data in zip(outputs, (a, b, c)):
        check_results(tmp_path / "out" / output, data)
    again = batch(inputs, recipe(), tmp_path / "out", client=client, progress=False)
    assert [r["output"] for r in again.rows] == outputs and again.count("kept") == 3


@pytest.mark.parametrize("content, pointer", [
    ('{"analyses": [{"analysis": "SumFrame"}, {"analysis": "CenterOfMass", "radius": -3}]}', "/analyses/1/radius"),
    ('{"analyses": [{"analysis": "SumFrame"}], "open": {"nav_shape": [0, 4]}}', "/open/nav_shape/0"),
    ('{"analyses": []}', "/analyses"),
    ('{"analyses": [{"analysis": "SumFrame"}], "opne": {}}', "/:"),
    ('{"analyses": [{"analysis": "NoSuchThing"}]}', "/analyses/0/analysis"),
    ('{"analyses": [{"analysis": "SumFrame"}], "open": {"format": "nope"}}', "/open/format"),
])
def test_a_recipe_that_fails_its_schema_names_the_json_pointer(tmp_path, content, pointer):
    path = tmp_path / "recipe.json"
    path.write_text(content)
    with pytest.raises(AnalysisError) as info:
        load_batch_recipe(path)
    assert f"{path}: {pointer}" in str(info.value)


def test_a_recipe_file_round_trips(tmp_path):
    path = tmp_path / "recipe.json"
    described = {"analyses": [a.to_dict() for a in recipe()], "open": {"format": "npy"}}
    path.write_text(json.dumps(described))
    loaded = load_batch_recipe(path)
    assert loaded.to_dict() == described and loaded.build() == recipe()
    assert BatchRecipe(**described).fingerprint == loaded.fingerprint


class Recorder:
    """A hook plugin keeping every event."""

    events: list = []

    def __init__(self):
        self.events = Recorder.events

    def on_submit(self, event):
        self.events.append(event)

    def on_result(self, event):
        self.events.append(event)

    def on_error(self, event):
        self.events.append(event)

    def on_complete(self, event):
        self.events.append(event)


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A hook plugin installed as a distribution with a stem_explorer.hooks entry point."""
    site = tmp_path / "site"
    dist = site / "batch_hooks_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: batch-hooks-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[stem_explorer.hooks]\nrecorder = test_batch:Recorder\n")
    monkeypatch.syspath_prepend(str(site))
    Recorder.events.clear()
    yield Recorder.events
    Recorder.events.clear()


def test_hooks_see_each_input_in_order_and_a_raising_hook_stops_nothing(client, tmp_path, installed_plugin):
    data = {name: write_scan(tmp_path / "in" / name, i) for i, name in enumerate(["a.npy", "b.npy"])}
    (tmp_path / "in" / "c.npy").write_bytes(b"broken")
    seen = []

    def explode(event):
        raise RuntimeError("a broken hook")

    hooks = [("on_submit", seen.append), ("on_result", seen.append), ("on_error", seen.append),
             ("on_complete", seen.append), ("on_result", explode)]
    report = batch(tmp_path / "in", recipe(), tmp_path / "out", client=client, hooks=hooks, progress=False)
    assert report.count("done") == 2 and len(report.failed) == 1
    assert [e.name for e in installed_plugin] == [e.name for e in seen]  # the entry point's plugin too
    by_input: dict = {}
    for event in seen[:-1]:
        by_input.setdefault(Path(event.input).name, []).append(event)
    assert {k: [e.name for e in v] for k, v in by_input.items()} == {
        "a.npy": ["on_submit", "on_result"], "b.npy": ["on_submit", "on_result"], "c.npy": ["on_submit", "on_error"]}
    for name in ("a.npy", "b.npy"):
        result = by_input[name][1].data
        assert result["output"] == str(tmp_path / "out" / name.replace(".npy", ".results.h5"))
        np.testing.assert_allclose(result["results"]["vd/bf"].data, expected(data[name])["vd/bf"])
        assert result["stats"].bytes_done == data[name].nbytes and result["row"]["status"] == "done"
    assert "c.npy" in by_input["c.npy"][1].data["error"]
    assert seen[-1].name == "on_complete" and seen[-1].data["failed"] == 1 and len(seen[-1].data["rows"]) == 3


def test_ctrl_c_cancels_the_inputs_in_flight_and_leaves_the_summary_and_whole_files(client, tmp_path):
    # 12 files, 2 tasks in flight: two groups of 3 at first, so at least 6 never start
    data = {f"s{i:02d}.npy": write_scan(tmp_path / "in" / f"s{i:02d}.npy", i) for i in range(12)}

    interrupted = []

    def interrupt(event):  # Ctrl-C as the first input is saved (once: a second one would cut the cleanup short)
        if not interrupted:
            interrupted.append(event.input)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the signal's KeyboardInterrupt arrives here, in the batch's thread

    with pytest.raises(KeyboardInterrupt):
        batch(tmp_path / "in", recipe(), tmp_path / "out", client=client, progress=False, concurrency=2,
              hooks={"on_result": interrupt})
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())
    statuses = [r["status"] for r in rows]
    assert statuses.count("done") >= 1 and statuses.count("cancelled") >= 3, statuses
    assert set(statuses) <= {"done", "cancelled"}
    for row in rows:
        output = tmp_path / "out" / row["output"]
        assert output.exists() == (row["status"] == "done")
        if output.exists():
            check_results(output, data[Path(row["input"]).name])
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []


def test_small_files_share_tasks_and_each_keeps_its_own_figures(client, tmp_path):
    from distributed import get_task_stream

    data = {f"s{i:02d}.npy": write_scan(tmp_path / "in" / f"s{i:02d}.npy", i, nav=(4, 3 + i)) for i in range(10)}
    with get_task_stream(client) as stream:
        report = batch(tmp_path / "in", recipe(), tmp_path / "out", client=client, progress=False, concurrency=2)
    assert report.count("done") == 10
    assert len(stream.data) < 10  # groups of small files, one task each
    rows = read_csv(tmp_path / "out")
    assert sum(int(r["task_inputs"]) > 1 for r in rows.values()) >= 10 - len(stream.data)
    for name, values in data.items():
        row = rows[name]
        check_results(tmp_path / "out" / row["output"], values)
        assert int(row["bytes"]) == values.nbytes and row["workers"].startswith("tcp://")
        assert float(row["seconds"]) > 0 and float(row["cpu_seconds"]) > 0 and int(row["peak_rss_bytes"]) > 0
        recorded = se.Results.load(tmp_path / "out" / row["output"]).provenance
        assert recorded["resources"]["bytes_read"] == values.nbytes
        assert recorded["batch"]["figures"]["cpu_seconds"] == float(row["cpu_seconds"])


def test_a_watched_folder_that_disappears_ends_the_batch_with_a_clear_error(client, tmp_path):
    folder = tmp_path / "acquisition"
    first = write_scan(folder / "first.npy", 1)

    def remove_when_first_is_saved():
        deadline = time.monotonic() + 60
        while not (tmp_path / "out" / "first.results.h5").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()

    remover = threading.Thread(target=remove_when_first_is_saved)
    remover.start()
    with pytest.raises(DataSetNotFoundError, match="watched folder .*acquisition.* disappeared"):
        batch(folder, recipe(), tmp_path / "out", client=client, progress=False, watch=True, poll_s=0.05,
              settle_s=0.1, idle_timeout=60)
    remover.join()
    check_results(tmp_path / "out" / "first.results.h5", first)
    assert read_csv(tmp_path / "out")["first.npy"]["status"] == "done"


def test_bad_options_are_refused_before_any_work(client, tmp_path):
    write_scan(tmp_path / "in" / "a.npy", 1)
    with pytest.raises(DataSetNotFoundError, match="matches no file"):
        batch(str(tmp_path / "in" / "*.mib"), recipe(), tmp_path / "out", client=client, progress=False)
    with pytest.raises(OptionError, match="watch=True needs a folder"):
        batch(tmp_path / "in" / "a.npy", recipe(), tmp_path / "out", client=client, progress=False, watch=True)
    with pytest.raises(OptionError, match="concurrency"):
        batch(tmp_path / "in", recipe(), tmp_path / "out", client=client, progress=False, concurrency=0)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_notebook_view_counts_files_bytes_and_failures():
    from stem_explorer.batch.progress import WidgetProgress

    view = WidgetProgress()
    view.grow(3, 3000)
    view.advance({"status": "done", "bytes": 1000})
    view.advance({"status": "failed", "bytes": 0})
    assert (view.files.value, view.files.max, view.data.value, view.data.max) == (2, 3, 1000, 3000)
    assert "2 of 3 inputs (1 done, 1 failed)" in view.label.value
    view.close()
    assert view.files.bar_style == "danger"


sys.modules.setdefault("test_batch", sys.modules[__name__])  # the entry point names this module


def test_a_watched_master_file_waits_for_its_data_files_and_a_stable_size(tmp_path):
    import h5py

    from stem_explorer.batch.watch import FolderWatcher

    folder = tmp_path / "arina"
    folder.mkdir()
    with h5py.File(folder / "scan_master.h5", "w") as f:
        f.create_group("entry/data")["data_000001"] = h5py.ExternalLink("scan_data_000001.h5", "/entry/data/data")
    watcher = FolderWatcher([folder], settle_s=1.0)
    assert watcher.poll(now=0.0) == []  # first sight
    assert watcher.poll(now=5.0) == []  # stable, but its data file is missing
    with h5py.File(folder / "scan_data_000001.h5", "w") as f:
        f["entry/data/data"] = np.zeros((4, 8, 8), np.uint16)
    assert watcher.poll(now=5.5) == []  # a companion changed: the clock starts again
    assert watcher.poll(now=6.0) == []
    assert watcher.poll(now=6.6) == [folder / "scan_master.h5"]  # the data file is no input of its own
    assert watcher.poll(now=100.0) == []  # reported once

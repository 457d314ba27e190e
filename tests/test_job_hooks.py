"""Event hooks of ``Session.run`` jobs on a real multi-process LocalCluster: the events
in order with their payloads, placements reported by the scheduler, a raising hook
kept and the job unharmed, installed plugins found through their entry points."""

import logging
import textwrap
import threading

import numpy as np
import pytest

import _reference as ref
from stem_explorer import Session, masks
from stem_explorer.analyses import SumFrame, VirtualDetector
from stem_explorer.engine.hooks import EVENTS, plugins_from_entry_points
from stem_explorer.errors import OptionError
from test_session import client, raw_dataset  # noqa: F401 (fixture)

pytestmark = pytest.mark.cluster

NAV, SIG = (12, 10), (14, 9)
FRAME_BYTES = SIG[0] * SIG[1] * 2
PARTITION_FRAMES = 10


class Recorder:
    """A plugin with every event's method; remembers the events and the threads."""

    def __init__(self):
        self.events = []
        self.threads = set()

    def _record(self, event):
        self.events.append(event)
        self.threads.add(threading.current_thread().name)

    on_submit = on_schedule = on_partition = on_result = on_error = on_complete = _record


def _data():
    return np.random.default_rng(3).integers(0, 3000, NAV + SIG).astype(np.uint16)


def test_a_jobs_events_come_in_order_with_their_payloads(client, tmp_path):  # noqa: F811
    data = _data()
    ds = raw_dataset(tmp_path, data)
    recorder = Recorder()
    disk = masks.Disk(7, 4, 3)
    with Session(ds, client=client, partition_bytes=PARTITION_FRAMES * FRAME_BYTES) as session:
        job = session.run(SumFrame(), VirtualDetector(disk), hooks=[recorder], preview_stride=0)
        results = job.result(timeout=120)  # returns once on_complete's hooks have run
    events = recorder.events
    names = [e.name for e in events]
    n = job.n_partitions
    frames = {p.index: p.n_frames for p in ds.partitions(2, PARTITION_FRAMES * FRAME_BYTES)}
    assert n == len(frames) > 4
    assert names[0] == "on_submit" and names[-2:] == ["on_result", "on_complete"]
    assert names.count("on_partition") == n and names.count("on_schedule") >= n and "on_error" not in names
    assert all(e.job_id == job.id and e.input == str(ds.path) for e in events)
    assert events[0].data == {"partitions": n, "bytes": data.nbytes}
    workers = set(client.scheduler_info()["workers"])
    keys = {f"stem-explorer-job{job.id}-part{i}": i for i in range(n)}
    partitions = {}
    for position, event in enumerate(events):
        if event.name == "on_schedule":  # the scheduler's placement, before the task's result
            assert event.data["worker"] in workers and keys[event.data["key"]] == event.data["partition"]
            assert f"part{event.data['partition']}" not in partitions
        elif event.name == "on_partition":
            i = event.data["partition"]
            scheduled = [e for e in events[:position] if e.name == "on_schedule" and e.data["partition"] == i]
            assert scheduled, f"partition {i} merged before its placement was reported"
            partitions[f"part{i}"] = event.data
    assert sorted(int(k[4:]) for k in partitions) == list(range(n))
    for name, payload in partitions.items():
        assert payload["bytes"] == frames[int(name[4:])] * FRAME_BYTES
        assert payload["worker"] in workers and payload["seconds"] > 0 and payload["cpu_seconds"] > 0
        assert payload["peak_rss_bytes"] > 10 * 2**20
    assert [e.data["partitions_done"] for e in events if e.name == "on_partition"] == list(range(1, n + 1))
    result_event = events[-2]
    assert result_event.data["results"] is results and result_event.data["stats"].bytes_done == data.nbytes
    np.testing.assert_array_equal(results["sum/frame"].data, ref.frames(data).sum(axis=0))
    np.testing.assert_allclose(results["vd/mask0"].data, ref.virtual_image(data, disk.rasterize(SIG)), rtol=1e-6)
    assert events[-1].data["status"] == "finished"
    assert recorder.threads == {f"stem-explorer-hooks{job.id}"}  # neither the job's thread nor dask's loop
    assert job.hook_errors == []


def test_a_raising_hook_is_logged_kept_and_the_job_finishes(client, tmp_path, caplog):  # noqa: F811
    data = _data()
    ds = raw_dataset(tmp_path, data)
    after, completed = [], []

    def broken(event):
        raise ZeroDivisionError(f"a bug in the user's hook at partition {event.data['partition']}")

    def waits_for_its_job(event):  # a hook may call the job's methods: no lock is held
        completed.append(job.result(timeout=30))

    hooks = {"on_partition": [broken, lambda e: after.append(e.data["partition"])], "on_complete": waits_for_its_job}
    with Session(ds, client=client, partition_bytes=PARTITION_FRAMES * FRAME_BYTES) as session:
        with caplog.at_level(logging.ERROR, logger="stem_explorer.engine.hooks"):
            job = session.run(SumFrame(), hooks=hooks, preview_stride=0)
            results = job.result(timeout=120)
    np.testing.assert_array_equal(results["sum/frame"].data, ref.frames(data).sum(axis=0))
    assert sorted(after) == list(range(job.n_partitions))  # the next hook still ran each time
    assert len(job.hook_errors) == job.n_partitions
    assert all(isinstance(e, ZeroDivisionError) for e in job.hook_errors)
    assert "broken" in caplog.text and "on_partition" in caplog.text
    assert completed and completed[0] is results


def test_a_cancelled_or_failed_job_tells_its_hooks(client, tmp_path):  # noqa: F811
    data = _data()
    ds = raw_dataset(tmp_path, data)
    recorder = Recorder()
    with Session(ds, client=client, partition_bytes=PARTITION_FRAMES * FRAME_BYTES) as session:
        job = session.run(SumFrame(), hooks=recorder, preview_stride=0)
        job.cancel()
        with pytest.raises(Exception):
            job.result(timeout=60)
    names = [e.name for e in recorder.events]
    assert names[-1] == "on_complete" and recorder.events[-1].data["status"] == "cancelled"
    assert "on_result" not in names

    (tmp_path / "data.raw").write_bytes(b"")  # the file lost its frames: the tasks fail
    failing = Recorder()
    with Session(ds, client=client, partition_bytes=PARTITION_FRAMES * FRAME_BYTES) as session:
        job = session.run(SumFrame(), hooks=failing, preview_stride=0)
        with pytest.raises(Exception) as raised:
            job.result(timeout=60)
    names = [e.name for e in failing.events]
    assert names[-2:] == ["on_error", "on_complete"] and failing.events[-1].data["status"] == "error"
    assert failing.events[-2].data["error"] is raised.value


PLUGIN = '''
events = []


class Plugin:
    def on_result(self, event):
        events.append(("result", event.job_id, sorted(event.data["results"])))

    def on_complete(self, event):
        events.append(("complete", event.job_id, event.data["status"]))
'''


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A distribution ``se-test-hooks`` on sys.path registering ``Plugin`` under the
    entry-point group ``stem_explorer.hooks`` (as ``pip install`` would leave it)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "se_test_hooks.py").write_text(PLUGIN)
    info = site / "se_test_hooks-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: se-test-hooks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""
        [stem_explorer.hooks]
        recorder = se_test_hooks:Plugin
    """))
    monkeypatch.syspath_prepend(str(site))
    import importlib

    importlib.invalidate_caches()
    module = importlib.import_module("se_test_hooks")
    yield module
    monkeypatch.delitem(__import__("sys").modules, "se_test_hooks")


def test_an_installed_plugin_gets_every_sessions_events(client, tmp_path, installed_plugin):  # noqa: F811
    loaded = plugins_from_entry_points()
    assert [type(p).__module__ for p in loaded] == ["se_test_hooks"]  # the package's own load only by name
    ds = raw_dataset(tmp_path, _data())
    with Session(ds, client=client) as session:
        job = session.run(SumFrame())
        job.result(timeout=120)
    assert installed_plugin.events == [("result", job.id, ["sum/frame"]), ("complete", job.id, "finished")]


def test_hooks_by_name_and_bad_hooks(tmp_path, installed_plugin):
    from stem_explorer.engine.hooks import as_hooks
    from stem_explorer.hook_plugins import JsonlLog

    hooks = as_hooks(["recorder", "jsonl-log"])
    assert len(hooks) == 2 + len(EVENTS)
    assert any(isinstance(getattr(fn, "__self__", None), JsonlLog) for _event, fn in hooks._hooks)
    with pytest.raises(OptionError, match="no hook plugin named 'nope'.*jsonl-log.*recorder"):
        as_hooks("nope")
    with pytest.raises(OptionError, match="none of the methods"):
        Session(tmp_path / "x.raw", hooks=[object()])


def test_a_callable_alone_hears_every_event_and_a_plugin_alone_its_own():
    from stem_explorer.engine.hooks import as_hooks

    heard = []
    hooks = as_hooks(lambda event: heard.append(event.name))
    plugin = Recorder()
    for name in EVENTS:
        hooks.emit(name, job_id=1)
        as_hooks(plugin).emit(name, job_id=1)
    assert heard == list(EVENTS) and [e.name for e in plugin.events] == list(EVENTS)

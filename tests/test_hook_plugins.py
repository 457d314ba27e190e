"""The package's hook plugins: PNG previews of the scan images and the JSONL event log,
on a real multi-process cluster, by name through their entry points; the log's lines
intact when several processes append at once."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from stem_explorer import Session, masks
from stem_explorer.analyses import CenterOfMass, SumFrame, VirtualDetector
from stem_explorer.engine.hooks import as_hooks
from stem_explorer.errors import SaveError
from stem_explorer.hook_plugins import JsonlLog, PreviewPNG, write_preview
from test_session import client, raw_dataset  # noqa: F401 (fixture)

NAV, SIG = (12, 10), (14, 9)


@pytest.mark.cluster
def test_previews_and_the_event_log_of_a_job(client, tmp_path, monkeypatch):  # noqa: F811
    data = np.random.default_rng(4).integers(0, 3000, NAV + SIG).astype(np.uint16)
    ds = raw_dataset(tmp_path, data, name="scan.raw")
    monkeypatch.chdir(tmp_path)  # jsonl-log by name writes its default file here
    previews = PreviewPNG(tmp_path / "previews")
    with Session(ds, client=client, partition_bytes=20 * SIG[0] * SIG[1] * 2, hooks=["jsonl-log"]) as session:
        job = session.run(VirtualDetector(masks.Disk(7, 4, 3)), CenterOfMass(), SumFrame(), hooks=[previews],
                          preview_stride=0)
        results = job.result(timeout=120)
    scan_images = sorted(k for k in results if results[k].dims == ("scan_y", "scan_x"))
    assert len(scan_images) >= 3  # the virtual image and CoM's maps; the sum frame is no scan image
    expected = [tmp_path / "previews" / f"scan.{key.replace('/', '_')}.png" for key in scan_images]
    assert sorted(previews.written) == sorted(expected)
    for key, path in zip(scan_images, expected):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "L" and image.size == (NAV[1], NAV[0])
            pixels = np.asarray(image)
        values = results[key].data
        if np.ptp(values) > 0:  # brighter where the values are higher
            assert pixels.ravel()[np.argmax(values)] == 255 and pixels.ravel()[np.argmin(values)] == 0

    lines = (tmp_path / "stem_explorer-events.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    names = [r["event"] for r in records]
    assert names[0] == "on_submit" and names[-2:] == ["on_result", "on_complete"]
    assert names.count("on_partition") == job.n_partitions
    assert [r["time"] for r in records] == sorted(r["time"] for r in records)
    assert all(r["job_id"] == job.id and r["input"] == str(ds.path) for r in records)
    assert records[-2]["results"] == {"keys": list(results), "complete": True}
    assert records[-1]["status"] == "finished" and records[-1]["stats"]["bytes_read"] == data.nbytes
    assert sum(r["bytes"] for r in records if r["event"] == "on_partition") == data.nbytes


def test_a_batch_result_gets_its_previews_next_to_its_results_file(tmp_path):
    """Batches name the results file in the event (``output``): previews go beside it."""
    from stem_explorer.results import ResultArray, Results

    image = np.arange(12.0).reshape(3, 4)
    image[0, 0] = np.nan
    results = Results({"vd/bf": ResultArray("bf", image, ("scan_y", "scan_x")),
                       "sum/frame": ResultArray("frame", np.ones((5, 5)), ("det_y", "det_x"))})
    hooks = as_hooks(PreviewPNG())
    hooks.emit("on_result", input="a.h5", results=results, output=str(tmp_path / "out" / "a.h5"))
    assert hooks.errors == []
    with Image.open(tmp_path / "out" / "a.vd_bf.png") as png:
        assert png.size == (4, 3)
        assert np.asarray(png)[0, 0] == 0  # NaN: black
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.vd_bf.png"]


WRITER = textwrap.dedent("""
    import sys
    from stem_explorer.engine.hooks import HookEvent
    from stem_explorer.hook_plugins import JsonlLog

    log = JsonlLog(sys.argv[1])
    for i in range(int(sys.argv[3])):
        log.on_partition(HookEvent("on_partition", 0.0, 1, sys.argv[2], {"partition": i, "pad": "x" * 3000}))
""")


def test_processes_appending_to_one_log_never_mix_their_lines(tmp_path):
    log = tmp_path / "events.jsonl"
    n = 300
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(log), f"writer{k}", str(n)]) for k in range(3)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    for k in range(3):
        assert [r["partition"] for r in records if r["input"] == f"writer{k}"] == list(range(n))
    assert len(records) == 3 * n


def test_bad_places_are_refused_at_once(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SaveError, match="is a folder"):
        JsonlLog(tmp_path)
    with pytest.raises(SaveError, match="is a file, not a folder"):
        PreviewPNG(tmp_path / "file" / "previews")
    with pytest.raises(SaveError, match="cannot save .*x.png"):
        write_preview(tmp_path / "file" / "x.png", np.zeros((2, 2)))

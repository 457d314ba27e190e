"""``stem-explorer batch`` as real processes (issue 16): killed with SIGKILL mid-batch
and run again, an output folder on a read-only or a full file system, and a watched
folder fed by a writer process that writes its files slowly."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import stem_explorer as se
from _mounts import run_with_mount

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

BF = se.masks.Disk(4, 4, 2.5)
RECIPE = {"analyses": [se.VirtualDetector({"bf": BF}).to_dict(), se.SumFrame().to_dict()]}


def scans(folder: Path, n: int, nav=(6, 5)) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for i in range(n):
        data = np.random.default_rng(i).integers(0, 1000, nav + (9, 8)).astype(np.uint16)
        np.save(folder / f"scan_{i:03d}.npy", data)
        written[f"scan_{i:03d}"] = data
    return written


def recipe_file(tmp_path: Path) -> Path:
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(RECIPE))
    return path


def batch_argv(tmp_path: Path, *inputs, out=None, extra=()) -> list:
    return [sys.executable, "-m", "stem_explorer", "batch", *map(str, inputs), "--recipe", str(recipe_file(tmp_path)),
            "-o", str(out or tmp_path / "out"), "--workers", "1", "-q", *extra]


def last_line(text: str) -> str:
    return text.rstrip().splitlines()[-1]


def assert_equal_numpy(path: Path, data: np.ndarray) -> None:
    results = se.Results.load(path)
    assert results.provenance["complete"] is True
    mask = BF.rasterize(data.shape[2:])
    np.testing.assert_allclose(results["vd/bf"].data, np.einsum("abyx,yx->ab", data.astype(float), mask), rtol=1e-6)
    np.testing.assert_array_equal(results["sum/frame"].data, data.sum(axis=(0, 1)))


def test_a_batch_killed_with_sigkill_resumes_and_every_output_equals_numpy(tmp_path):
    data = scans(tmp_path / "in", 12)
    (tmp_path / "in" / "zz_truncated.npy").write_bytes(b"\x93NUMPY")  # fails its row; the batch goes on
    out = tmp_path / "out"
    # its own session, so the kill takes the worker processes along
    proc = subprocess.Popen(batch_argv(tmp_path, tmp_path / "in", extra=["--jobs", "1"]), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 500  # a loaded machine's cluster start and first kernels
    while len(list(out.glob("*.results.h5"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    running = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    _stdout, stderr = proc.communicate()
    assert running, stderr.decode()
    finished = sorted(out.glob("*.results.h5"))
    assert 3 <= len(finished) < len(data), "the batch must be killed mid-way"
    for path in finished:  # whatever carries a final name is whole
        assert_equal_numpy(path, data[path.name.removesuffix(".results.h5")])
    if (out / "summary.csv").exists():
        json.loads((out / "summary.json").read_text())  # whole, or not there at all

    rerun = subprocess.run(batch_argv(tmp_path, tmp_path / "in"), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 1  # the truncated file
    # the last line (dask's workers may log a missed heartbeat with its traceback before it on a loaded machine)
    assert last_line(rerun.stderr).startswith("stem-explorer: 1 of 13 inputs failed (the reasons are in ")
    assert "zz_truncated.npy" in last_line(rerun.stderr)
    rows = json.loads((out / "summary.json").read_text())
    statuses = [r["status"] for r in rows]
    assert statuses.count("kept") >= len(finished) and statuses.count("done") + statuses.count("kept") == len(data)
    assert rows[-1]["status"] == "failed" and "zz_truncated.npy" in rows[-1]["error"]
    for name, array in data.items():
        assert_equal_numpy(out / f"{name}.results.h5", array)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # temporaries of the killed saves gone


def test_a_read_only_output_folder_is_a_clear_error_and_nothing_is_written(tmp_path):
    scans(tmp_path / "in", 2)
    out = tmp_path / "out"
    out.mkdir()
    proc = run_with_mount(out, "--bind -o ro", batch_argv(tmp_path, tmp_path / "in"))
    assert proc.returncode == 2, proc.stderr
    assert f"stem-explorer: error: cannot save {str(out)!r}: the folder {str(out)!r} is not writable" in proc.stderr
    assert "Traceback" not in proc.stderr and list(out.iterdir()) == []


FULL_DISK = """
import json, os, subprocess, sys
out = sys.argv[1]
proc = subprocess.run(sys.argv[2:], capture_output=True, text=True)
from stem_explorer import Results
whole = [Results.load(os.path.join(out, n)).provenance["complete"] for n in os.listdir(out) if n.endswith(".results.h5")]
print(json.dumps({"rc": proc.returncode, "stderr": proc.stderr, "names": sorted(os.listdir(out)), "whole": whole}))
"""


def test_a_full_output_file_system_stops_the_batch_with_a_clear_error_and_nothing_half_written(tmp_path):
    scans(tmp_path / "in", 12, nav=(32, 32))  # results of 8 KiB and more each: a 64 KiB disk fills
    out = tmp_path / "out"
    out.mkdir()
    proc = run_with_mount(out, "-t tmpfs -o size=64k",
                          [sys.executable, "-c", FULL_DISK, str(out), *batch_argv(tmp_path, tmp_path / "in")])
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert found["rc"] == 2, found
    assert last_line(found["stderr"]).startswith("stem-explorer: error: cannot save")
    assert "No space left on device" in last_line(found["stderr"])
    assert all(found["whole"]) and len(found["whole"]) < 12
    assert [n for n in found["names"] if n.startswith(".")] == []  # no temporary left


WRITER = """
import sys, time
import numpy as np
folder = sys.argv[1]
for i in range(3):
    data = np.random.default_rng(100 + i).integers(0, 1000, (6, 5, 9, 8)).astype(np.uint16)
    path = f"{folder}/late_{i}.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(data))
        for chunk in np.array_split(data.reshape(-1), 4):
            f.write(chunk.tobytes())
            f.flush()
            time.sleep(0.3)
    time.sleep(0.2)
"""


def test_a_watched_folder_fed_slowly_by_a_writer_process_gets_each_file_once_complete(tmp_path):
    folder = tmp_path / "acquisition"
    data = scans(folder, 1)
    data.update({f"late_{i}": np.random.default_rng(100 + i).integers(0, 1000, (6, 5, 9, 8)).astype(np.uint16)
                 for i in range(3)})
    argv = batch_argv(tmp_path, folder, extra=["--watch", "--settle", "1", "--poll", "0.1", "--idle-timeout", "6"])
    batch_proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer = subprocess.run([sys.executable, "-c", textwrap.dedent(WRITER), str(folder)], timeout=120)
    assert writer.returncode == 0
    stdout, stderr = batch_proc.communicate(timeout=300)
    assert batch_proc.returncode == 0, stderr
    rows = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert sorted(Path(r["input"]).stem for r in rows) == sorted(data) and {r["status"] for r in rows} == {"done"}
    for name, array in data.items():
        assert_equal_numpy(tmp_path / "out" / f"{name}.results.h5", array)

"""Results: HDF5 with provenance (atomic), xarray, TIFF."""

import json
import os
import stat
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from _mounts import run_with_mount
from stem_explorer import open_dataset
from stem_explorer.analyses import SumFrame, VirtualDetector
from stem_explorer.analyses.plan import build_plan
from stem_explorer.errors import AnalysisError, DataSetError, DataSetNotFoundError, FormatError, ResultNameError, SaveError
from stem_explorer.masks import Disk
from stem_explorer.results import ResultArray, Results


def sample_results():
    image = np.arange(12, dtype=np.float64).reshape(3, 4)
    frame = np.ones((5, 6))
    arrays = {
        "vd/bf": ResultArray("bf", image, ("scan_y", "scan_x"), {"scan_y": np.arange(3), "scan_x": np.arange(4)}, {"mask": {"kind": "disk", "cy": 1.0, "cx": 2.0, "radius": 3.0}}),
        "sum/frame": ResultArray("frame", frame, ("det_y", "det_x")),
    }
    provenance = {"software": {"name": "stem_explorer", "version": "0.1.0"}, "dataset": {"path": "x.h5"}, "analyses": [{"analysis": "VirtualDetector"}]}
    return Results(arrays, provenance)


def test_save_and_load_round_trip(tmp_path):
    results = sample_results()
    path = results.save(tmp_path / "out.h5")
    loaded = Results.load(path)
    assert list(loaded) == list(results)
    np.testing.assert_array_equal(loaded["vd/bf"].data, results["vd/bf"].data)
    assert loaded["vd/bf"].dims == ("scan_y", "scan_x")
    assert loaded["vd/bf"].attrs["mask"]["kind"] == "disk"
    np.testing.assert_array_equal(loaded["vd/bf"].coords["scan_x"], np.arange(4))
    assert loaded.provenance == results.provenance
    with h5py.File(path) as f:
        assert json.loads(f.attrs["provenance"])["software"]["name"] == "stem_explorer"


def test_interrupted_save_leaves_old_file_intact(tmp_path, monkeypatch):
    target = tmp_path / "out.h5"
    sample_results().save(target)
    before = target.read_bytes()

    class Boom(ResultArray):
        @property
        def coords(self):
            raise KeyboardInterrupt("interrupted while writing")

        @coords.setter
        def coords(self, value):
            pass

    broken = Results({"a/b": Boom("b", np.zeros(3), ("x",))}, {})
    with pytest.raises(KeyboardInterrupt):
        broken.save(target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.h5"]


def test_save_refuses_to_overwrite_when_asked(tmp_path):
    target = tmp_path / "out.h5"
    sample_results().save(target)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        sample_results().save(target, overwrite=False)


def test_xarray_export():
    pytest.importorskip("xarray")
    ds = sample_results().to_xarray()
    assert ds["vd/bf"].dims == ("scan_y", "scan_x")
    assert json.loads(ds.attrs["provenance"])["dataset"]["path"] == "x.h5"
    assert json.loads(ds["vd/bf"].attrs["mask"])["radius"] == 3.0


def test_tiff_export(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    paths = sample_results().to_tiff(tmp_path / "tiffs")
    assert sorted(p.name for p in paths) == ["sum_frame.tif", "vd_bf.tif"]
    with tifffile.TiffFile(tmp_path / "tiffs" / "vd_bf.tif") as tif:
        np.testing.assert_array_equal(tif.asarray(), np.arange(12, dtype=np.float32).reshape(3, 4))
        assert "stem_explorer" in tif.pages[0].description


def test_group_and_numpy():
    results = sample_results()
    assert set(results.group("vd")) == {"bf"}
    assert set(results.to_numpy()) == {"vd/bf", "sum/frame"}
    with pytest.raises(KeyError, match="available"):
        results["nope"]


# -- how files are written -------------------------------------------------------------
@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_saved_files_get_the_mode_of_open_under_the_umask(tmp_path, umask, mask):
    umask(mask)
    with open(tmp_path / "reference", "w"):
        pass
    expected = stat.S_IMODE(os.stat(tmp_path / "reference").st_mode)
    assert expected == 0o666 & ~mask
    results = sample_results()
    assert stat.S_IMODE(os.stat(results.save(tmp_path / "out.h5")).st_mode) == expected
    for written in results.to_tiff(tmp_path / "tiffs"):
        assert stat.S_IMODE(os.stat(written).st_mode) == expected


def test_replacing_a_file_keeps_its_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "out.h5"
    sample_results().save(target)
    os.chmod(target, 0o640)
    sample_results().save(target)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640


def test_save_to_a_folder_is_refused_and_leaves_nothing(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(SaveError, match="is a folder.*results.h5"):
        sample_results().save(folder)
    assert list(tmp_path.rglob("*")) == [folder]


def test_save_writes_through_a_symlink(tmp_path):
    real = tmp_path / "store" / "real.h5"
    real.parent.mkdir()
    sample_results().save(real)
    link = tmp_path / "link.h5"
    link.symlink_to(real)
    changed = Results({"vd/bf": ResultArray("bf", np.full((2, 2), 7.0), ("scan_y", "scan_x"))}, {})
    changed.save(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    np.testing.assert_array_equal(Results.load(real)["vd/bf"].data, np.full((2, 2), 7.0))
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.h5"]


def test_save_under_a_long_non_ascii_name(tmp_path):
    target = tmp_path / ("\u00e9" * 120 + ".h5")  # 243 bytes: a temporary must not add to it
    sample_results().save(target)
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_save_syncs_the_data_before_the_rename(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", str(a))), real_replace(a, b))[1])
    sample_results().save(tmp_path / "out.h5")
    (replace_at,) = [i for i, c in enumerate(calls) if c[0] == "replace"]
    tmp = calls[replace_at][1]
    assert ("fsync", tmp) in calls[:replace_at]
    assert ("fsync", str(tmp_path)) in calls[replace_at:]  # the rename itself


# A save that blocks while writing its second array, until killed.
SAVE_UNTIL_KILLED = """
import sys, time
import numpy as np
from stem_explorer.results import ResultArray, Results

class Blocks:
    ndim, shape = 1, (10,)
    def __array__(self, dtype=None, copy=None):
        open(sys.argv[2], "w").close()  # the first array is in the temporary by now
        time.sleep(600)

big = np.random.default_rng(0).random((2560, 2560))  # 50 MiB
Results({"a/big": ResultArray("big", big, ("y", "x")), "a/late": ResultArray("late", Blocks(), ("i",))}, {}).save(sys.argv[1])
"""


def test_temporaries_of_a_killed_save_are_removed_by_the_next_save(tmp_path):
    target, ready = tmp_path / "out.h5", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", SAVE_UNTIL_KILLED, str(target), str(ready)])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the save did not start"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    (left,) = [p for p in tmp_path.iterdir() if p.name.startswith(".out.h5.")]
    assert left.stat().st_size > 40 * 2**20
    # what must survive: the user's own files, a temporary whose writer still runs
    host, dead_pid = left.name.split("-")[2:4]
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        kept = [
            ".out.h5.tmp", "out.h5.tmp", ".out.h5.backup",  # look alike, are the user's
            f".out.h5.stem-explorer-{host}-{alive.pid}-0123abcd.tmp",  # its writer still runs
            f".out.h5.stem-explorer-00000000-{dead_pid}-0123abcd.tmp",  # written on another host
            f".other.h5.stem-explorer-{host}-{dead_pid}-0123abcd.tmp",  # not this file's
            f".out.h5x.stem-explorer-{host}-{dead_pid}-0123abcd.tmp",  # a file whose name starts with its
        ]
        for name in kept:
            (tmp_path / name).write_text("keep")
        if os.geteuid() == 0:  # another user's
            kept.append(f".out.h5.stem-explorer-{host}-{dead_pid}-feedbeef.tmp")
            (tmp_path / kept[-1]).write_text("keep")
            os.chown(tmp_path / kept[-1], 65534, 65534)
        sample_results().save(target)
    finally:
        alive.kill()
        alive.wait()
    assert not left.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["out.h5", "ready"])
    assert list(Results.load(target)) == ["vd/bf", "sum/frame"]


# -- names ------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["vd/.", "vd/", "./bf", "vd/..", "", "vd/a\x00b", "vd//bf"])
def test_unusable_result_keys_are_refused(key):
    with pytest.raises(ResultNameError, match="cannot name a result"):
        Results({key: ResultArray("x", np.zeros(2), ("i",))}, {})


def test_a_key_that_is_also_a_label_is_refused():
    arrays = {k: ResultArray("x", np.zeros(2), ("i",)) for k in ("vd", "vd/bf")}
    with pytest.raises(ResultNameError, match="'vd' is also the label"):
        Results(arrays, {})


@pytest.mark.parametrize("build", [
    lambda: VirtualDetector({".": Disk(2, 2, 1)}),
    lambda: VirtualDetector({"": Disk(2, 2, 1)}),
    lambda: VirtualDetector({"a/b": Disk(2, 2, 1)}),
], ids=["dot", "empty", "slash"])
def test_unusable_analysis_names_are_refused_before_computing(build):
    with pytest.raises(ResultNameError, match="cannot name a result"):
        build()


@pytest.mark.parametrize("name", [".", "", "a/b"])
def test_unusable_labels_are_refused_by_their_declaration(name):
    """``name`` is a declared Label: letters, digits, _ and - only (stricter than HDF5)."""
    with pytest.raises(AnalysisError, match="name must be a name of letters, digits, _ and -"):
        VirtualDetector(Disk(2, 2, 1), name=name)


def test_unusable_analysis_names_are_refused_by_the_plan():
    analysis = SumFrame()
    analysis.name = "."
    with pytest.raises(ResultNameError, match="the name of SumFrame"):
        build_plan([analysis], open_dataset(np.zeros((2, 2, 4, 4))))


# -- loading what is not a results file ------------------------------------------------
def _write_bytes(path, data):
    path.write_bytes(data)
    return path


def _write_h5(path, **attrs):
    with h5py.File(path, "w") as f:
        f.attrs.update(attrs)
        f["results/vd/bf"] = np.zeros(3)
        f["results/vd/bf"].attrs.update(dims='["i"]', attrs="{}")
    return path


VALID = {"software": "stem_explorer", "provenance": "{}", "keys": '["vd/bf"]'}
DAMAGED = {
    "text file": lambda p: _write_bytes(p, b"hello"),
    "foreign hdf5": lambda p: _write_h5(p),
    "not our software": lambda p: _write_h5(p, **dict(VALID, software="other")),
    "no keys": lambda p: _write_h5(p, software="stem_explorer", provenance="{}"),
    "bad json": lambda p: _write_h5(p, **dict(VALID, provenance="{nope")),
    "nested json": lambda p: _write_h5(p, **dict(VALID, provenance="[" * 100_000 + "]" * 100_000)),
    "provenance a list": lambda p: _write_h5(p, **dict(VALID, provenance="[]")),
    "missing array": lambda p: _write_h5(p, **dict(VALID, keys='["vd/dark"]')),
    "bad key": lambda p: _write_h5(p, **dict(VALID, keys='["vd/bf", 3]')),
    "truncated": lambda p: _write_bytes(p, sample_results().save(p).read_bytes()[:3000]),
}


@pytest.mark.parametrize("make", DAMAGED.values(), ids=DAMAGED.keys())
def test_loading_a_foreign_or_damaged_file_says_so(tmp_path, make):
    path = make(tmp_path / "in.h5")
    with pytest.raises(FormatError, match=r"in\.h5.*not a results file of stem_explorer or is damaged.*Results\.save"):
        Results.load(path)


def test_loading_a_missing_file_or_a_folder(tmp_path):
    with pytest.raises(DataSetNotFoundError, match="no results file .*nope.h5"):
        Results.load(tmp_path / "nope.h5")
    with pytest.raises(DataSetError, match="is a folder"):
        Results.load(tmp_path)


# Root reads any file; a process in a user namespace of its own reads as nobody.
LOAD_AS_NOBODY = """
import ctypes, sys
import h5py  # imported before: the interpreter's own files are root's
from stem_explorer.results import Results
if ctypes.CDLL(None, use_errno=True).unshare(0x10000000) != 0:  # CLONE_NEWUSER
    sys.exit(77)
try:
    Results.load(sys.argv[1])
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_loading_a_file_this_user_may_not_read(tmp_path):
    path = sample_results().save(tmp_path / "secret.h5")
    path.chmod(0)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")  # unshare needs one thread
    proc = subprocess.run([sys.executable, "-c", LOAD_AS_NOBODY, str(path)], capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode == 77:
        pytest.skip("no user namespaces here")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout == f"DataSetPermissionError cannot read {str(path)!r}: permission denied; ask its owner for read access or copy it\n"


SAVE_MEGABYTES = """
import os, sys
import numpy as np
from stem_explorer.errors import SaveError
from stem_explorer.results import ResultArray, Results
try:
    Results({"a/big": ResultArray("big", np.ones((512, 512)), ("y", "x"))}).save(sys.argv[1])
except SaveError as exc:
    print(exc)
print(os.listdir(os.path.dirname(sys.argv[1])))  # the tmpfs goes with this process
"""


def test_save_onto_a_full_file_system_is_a_clear_error_and_leaves_nothing(tmp_path):
    full = tmp_path / "small"
    full.mkdir()
    proc = run_with_mount(full, "-t tmpfs -o size=64k", [sys.executable, "-c", SAVE_MEGABYTES, str(full / "out.h5")])
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    message, left = proc.stdout.splitlines()
    assert message == (f"cannot save {str(full / 'out.h5')!r}: No space left on device (in {str(full)!r}); "
                       "choose a folder you can write to with free space, or fix its permissions")
    assert left == "[]"

"""Results: HDF5 with provenance (atomic), xarray, TIFF."""

import json

import h5py
import numpy as np
import pytest

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

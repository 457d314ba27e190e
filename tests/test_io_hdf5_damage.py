"""HDF5 files that are damaged or incomplete: virtual datasets whose sources are
missing, corrupt metadata, data truncated after opening. Each is the package's error
naming the file, never a raw h5py exception or silently wrong frames."""

import os

import h5py
import numpy as np
import pytest

from stem_explorer.errors import DataSetError, DataSetNotFoundError, FormatError
from stem_explorer.io import open_dataset
from stem_explorer.io.testing import assert_reads_equal, make_frames


# -- virtual datasets ------------------------------------------------------------------------
def write_vds(folder, data, *, sources=("a.h5", "b.h5"), name="frames"):
    """A master file whose ``/frames`` is a virtual dataset stacking one source file
    per half of the frames (as detector writers split an acquisition)."""
    n = len(data)
    half = n // len(sources)
    layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
    for i, source in enumerate(sources):
        part = data[i * half : (i + 1) * half]
        with h5py.File(folder / source, "w") as f:
            f.create_dataset("data", data=part)
        layout[i * half : (i + 1) * half] = h5py.VirtualSource(source, "data", shape=part.shape)
    master = folder / "master.h5"
    with h5py.File(master, "w") as f:
        f.create_virtual_dataset(name, layout, fillvalue=0)
    return master


def test_virtual_dataset_with_all_sources_reads_them(tmp_path):
    data = make_frames((6,), (4, 5), "uint16")
    ds = open_dataset(write_vds(tmp_path, data))
    assert_reads_equal(ds, data)
    assert ds.metadata["virtual_sources"] == ["a.h5", "b.h5"]


def test_virtual_dataset_with_a_missing_source_is_refused(tmp_path):
    data = make_frames((6,), (4, 5), "uint16") + 1  # no frame is all zeros
    master = write_vds(tmp_path, data)
    os.remove(tmp_path / "b.h5")
    with h5py.File(master, "r") as f:  # what h5py does: the fill value, no error
        assert not f["frames"][3:].any()
    with pytest.raises(DataSetNotFoundError) as info:
        open_dataset(master)
    message = str(info.value)
    assert "b.h5" in message and str(master) in message and "a.h5" not in message.split("missing")[1]
    assert "fill value" in message and "HDF5_VDS_PREFIX" in message


def test_virtual_source_that_is_not_hdf5(tmp_path):
    master = write_vds(tmp_path, make_frames((6,), (4, 5), "uint16"))
    (tmp_path / "b.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(FormatError, match=r"b\.h5.*cannot be opened as HDF5"):
        open_dataset(master)


def test_virtual_dataset_whose_source_lacks_the_dataset(tmp_path):
    data = make_frames((6,), (4, 5), "uint16")
    master = write_vds(tmp_path, data)
    with h5py.File(tmp_path / "a.h5", "w") as f:  # rewritten without "data"
        f["other"] = np.zeros(3)
    with pytest.raises(DataSetNotFoundError, match=r"a\.h5.*has no dataset '/?data'"):
        open_dataset(master)


def test_virtual_source_found_through_hdf5_vds_prefix(tmp_path, monkeypatch):
    data = make_frames((6,), (4, 5), "uint16")
    master = write_vds(tmp_path, data)
    elsewhere = tmp_path / "moved"
    elsewhere.mkdir()
    for name in ("a.h5", "b.h5"):
        os.rename(tmp_path / name, elsewhere / name)
    with pytest.raises(DataSetNotFoundError):
        open_dataset(master)
    monkeypatch.setenv("HDF5_VDS_PREFIX", str(elsewhere))
    assert_reads_equal(open_dataset(master), data)


# -- corrupt metadata --------------------------------------------------------------------------
def damaged_copy(tmp_path, source, at, patch=b"\xff\x7f"):
    raw = bytearray(source.read_bytes())
    raw[at : at + len(patch)] = patch
    target = tmp_path / f"damaged_{at}.h5"
    target.write_bytes(bytes(raw))
    return target


@pytest.fixture
def nested_file(tmp_path):
    path = tmp_path / "base.h5"
    with h5py.File(path, "w") as f:
        group = f.create_group("entry/instrument")
        for i in range(5):
            group[f"aux{i}"] = np.zeros(3)
        f["entry/data/frames"] = np.arange(2 * 3 * 4 * 4, dtype="u2").reshape(2, 3, 4, 4)
    return path


def test_corrupt_metadata_is_a_format_error_naming_the_file(tmp_path, nested_file):
    """Two bytes overwritten at every 8th offset of a small file: whatever h5py
    raises while the reader searches the file (KeyError, RuntimeError, ValueError
    were seen) comes out as the package's error naming the file."""
    size = nested_file.stat().st_size
    raw_errors = []
    for at in range(0, size - 2, 8):
        damaged = damaged_copy(tmp_path, nested_file, at)
        try:
            open_dataset(damaged)
        except DataSetError as exc:
            assert str(damaged) in str(exc)
        except Exception as exc:  # noqa: BLE001 - the test collects what escapes
            raw_errors.append((at, type(exc).__name__, str(exc)[:80]))
        damaged.unlink()
    assert not raw_errors


def test_gzip_chunks_truncated_after_opening(tmp_path):
    data = make_frames((8,), (16, 16), "uint16")
    path = tmp_path / "gz.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("frames", data=data, chunks=(1, 16, 16), compression="gzip")
    ds = open_dataset(path)
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(FormatError) as info:
        ds.read_frames(0, 8)
    assert str(path) in str(info.value) and "truncated" in str(info.value)

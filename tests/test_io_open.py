"""open_dataset dispatch, option checking, URLs, and partition planning."""

import h5py
import numpy as np
import pytest

from stem_explorer.errors import DataSetError, DataSetNotFoundError, FormatError
from stem_explorer.io import DataSet, open_dataset, readers, register_reader
from stem_explorer.io import registry
from stem_explorer.io.base import plan_partitions
from stem_explorer.io.open import reader_options
from stem_explorer.io.partitioned import write_raw_partitions
from stem_explorer.io.registry import ReaderPlugin
from stem_explorer.io.testing import assert_reads_equal, make_frames


def test_builtin_readers_registered():
    names = {p.name for p in readers()}
    assert {"raw", "npy", "hdf5", "memory", "raw_partitions"} <= names


def test_dispatch_by_suffix_and_sniff(tmp_path):
    data = make_frames((2, 3), (4, 4), "<u2")
    np.save(tmp_path / "a.npy", data)
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f["frames"] = data
    (tmp_path / "b.h5").rename(tmp_path / "b.unknown")
    write_raw_partitions(tmp_path / "c", data)
    (tmp_path / "d.raw").write_bytes(data.tobytes())
    assert open_dataset(tmp_path / "a.npy").format == "npy"
    assert open_dataset(str(tmp_path / "b.unknown")).format == "hdf5"  # magic bytes
    assert open_dataset(tmp_path / "c").format == "raw_partitions"  # a directory
    assert open_dataset(tmp_path / "c" / "dataset.json").format == "raw_partitions"
    ds = open_dataset(tmp_path / "d.raw", nav_shape=(2, 3), sig_shape=(4, 4), dtype="<u2")
    assert_reads_equal(ds, data)
    # an explicit format wins over the suffix
    ds = open_dataset(tmp_path / "a.npy", format="raw", nav_shape=(2, 3), sig_shape=(4, 4),
                      dtype="<u2", offset=128)
    assert_reads_equal(ds, data)
    assert open_dataset(f"file://{tmp_path / 'a.npy'}").format == "npy"


def test_unknown_option_lists_accepted(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 4, 4), "u1"))
    with pytest.raises(DataSetError) as info:
        open_dataset(tmp_path / "a.npy", dataset="/x")
    msg = str(info.value)
    assert "'npy' reader does not take the option(s) dataset" in msg and "nav_shape" in msg
    with pytest.raises(DataSetError, match="options are: nav_shape, sig_shape, dtype, offset"):
        open_dataset(tmp_path / "a.npy", format="raw", navshape=(2,))
    with pytest.raises(DataSetError, match="does not take the option.*shape"):
        open_dataset(np.zeros((2, 4, 4)), shape=(2,))


def test_reader_options_of_plugins():
    assert reader_options(registry.get_reader("hdf5")) == ["dataset", "nav_shape", "channel"]
    assert reader_options(ReaderPlugin("any", lambda path, **kw: None)) is None


def test_missing_path_and_bad_inputs(tmp_path):
    with pytest.raises(DataSetNotFoundError, match="nothing-here.h5"):
        open_dataset(tmp_path / "nothing-here.h5")
    with pytest.raises(FileNotFoundError):  # the builtin exception still works
        open_dataset(str(tmp_path / "nothing-here.raw"))
    with pytest.raises(DataSetError, match="takes a path, a numpy array or a dask array"):
        open_dataset([[1, 2], [3, 4]])
    (tmp_path / "x.weird").write_bytes(b"12345678")
    with pytest.raises(FormatError, match="pass format="):
        open_dataset(tmp_path / "x.weird")
    with pytest.raises(FormatError, match="unknown format 'tiff'"):
        open_dataset(tmp_path / "x.weird", format="tiff")


def test_unreachable_hdfs_and_unknown_schemes(monkeypatch):
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    with pytest.raises(DataSetError, match="cannot find the WebHDFS server"):
        open_dataset("hdfs://127.0.0.1:1/data/scan")
    with pytest.raises(DataSetError, match="no reader handles s3:// URLs"):
        open_dataset("s3://bucket/scan")


def test_url_scheme_goes_to_registered_reader(monkeypatch):
    seen = {}

    def open_hdfs(url, *, verify="size"):
        seen["url"], seen["verify"] = url, verify
        return open_dataset(np.zeros((2, 3, 3), "u1"))

    monkeypatch.setitem(registry._READERS, "hdfs", ReaderPlugin("hdfs", open_hdfs))
    ds = open_dataset("hdfs://nn/data", verify="full")
    assert isinstance(ds, DataSet)
    assert seen == {"url": "hdfs://nn/data", "verify": "full"}
    with pytest.raises(DataSetError, match="options are: verify"):
        open_dataset("hdfs://nn/data", bogus=1)


def test_dataset_passthrough():
    ds = open_dataset(np.zeros((2, 3, 3), "u1"))
    assert open_dataset(ds) is ds
    with pytest.raises(DataSetError, match="already open"):
        open_dataset(ds, nav_shape=(2,))


def test_register_reader_refuses_duplicates():
    plugin = registry.get_reader("npy")
    with pytest.raises(ValueError):
        register_reader(plugin)


@pytest.mark.parametrize("n_frames", [1, 7, 30, 1000])
@pytest.mark.parametrize("alignment", [1, 3, 10])
@pytest.mark.parametrize("n_workers", [1, 2, 3, 4])
@pytest.mark.parametrize("target_frames", [1, 5, 64, 10**6])
def test_plan_partitions_properties(n_frames, alignment, n_workers, target_frames):
    frame_bytes = 100
    ranges = plan_partitions(
        n_frames, frame_bytes, alignment=alignment, n_workers=n_workers,
        target_bytes=target_frames * frame_bytes,
    )
    assert ranges[0][0] == 0 and ranges[-1][1] == n_frames
    for (a, b), (c, d) in zip(ranges, ranges[1:]):
        assert b == c
    assert all(b > a for a, b in ranges)
    assert all(a % alignment == 0 for a, _ in ranges)
    units = -(-n_frames // alignment)
    assert len(ranges) % n_workers == 0 or len(ranges) == units


def test_first_partition_of_each_worker_is_a_quarter():
    """The first task per worker is small (an early first result); the rest are large."""
    ranges = plan_partitions(4096, 2**16, n_workers=2, target_bytes=2**16 * 512)
    sizes = [b - a for a, b in ranges]
    assert sizes[:4] == [128, 384, 128, 384] and set(sizes[4:]) == {512}
    assert len(ranges) % 2 == 0
    # one partition per worker: nothing to split
    assert plan_partitions(1024, 1, n_workers=2, target_bytes=10**9) == [(0, 512), (512, 1024)]

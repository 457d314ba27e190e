"""Raw binary reader and the shared mmap helper."""

import math
import os
import pickle

import numpy as np
import pytest

from stem_explorer.errors import DataSetError, DataSetNotFoundError, FormatError
from stem_explorer.io import open_dataset
from stem_explorer.io.raw import MappedFrameSource, map_frames
from stem_explorer.io.testing import (
    assert_partitions_valid, assert_reads_equal, each_dtype_and_shape, is_memory_mapped, make_frames
)

@each_dtype_and_shape
def test_raw_roundtrip(tmp_path, nav, sig, dtype):
    data = make_frames(nav, sig, dtype)
    path = tmp_path / "frames.raw"
    path.write_bytes(data.tobytes())
    ds = open_dataset(path, nav_shape=nav, sig_shape=sig, dtype=dtype)
    assert ds.format == "raw"
    assert ds.nav_shape == nav and ds.sig_shape == sig
    assert ds.dtype == np.dtype(dtype) and ds.dtype.str == np.dtype(dtype).str
    assert ds.shape == data.shape
    for n_workers, target in [(1, None), (2, 3 * ds.frame_bytes), (3, ds.frame_bytes)]:
        parts = ds.partitions(n_workers, target)
        assert_partitions_valid(ds, parts, n_workers)
        assert_reads_equal(ds, data, partitions=parts, tile_frames=2)
    assert np.array_equal(ds.read_frames(0, ds.n_frames), data.reshape((-1,) + sig))


def test_raw_reads_are_zero_copy_views(tmp_path):
    data = make_frames((4, 3), (5, 6), ">u2")
    path = tmp_path / "frames.bin"
    path.write_bytes(data.tobytes())
    ds = open_dataset(path, nav_shape=(4, 3), sig_shape=(5, 6), dtype=">u2")
    part = ds.partitions()[0]
    with part.source.open() as reader:
        tile = reader.read(2, 7)
        assert tile.dtype.str == ">u2"  # byte order as stored
        assert is_memory_mapped(tile)
        assert not tile.flags.owndata and not tile.flags.writeable
        assert np.array_equal(tile, data.reshape(-1, 5, 6)[2:7])


def test_raw_header_and_frame_padding(tmp_path):
    nav, sig, dtype = (2, 3), (4, 5), np.dtype("<i4")
    data = make_frames(nav, sig, dtype, seed=3)
    header, fh, ff = 17, 6, 3  # odd sizes: misaligned values must still read right
    blob = bytearray(b"H" * header)
    for frame in data.reshape(-1, *sig):
        blob += b"h" * fh + frame.tobytes() + b"f" * ff
    path = tmp_path / "padded.dat"
    path.write_bytes(bytes(blob))
    ds = open_dataset(
        path,
        nav_shape=nav,
        sig_shape=sig,
        dtype="<i4",
        offset=header,
        frame_header=fh,
        frame_footer=ff,
    )
    assert_reads_equal(ds, data, tile_frames=4)
    with ds.source.open() as reader:
        assert is_memory_mapped(reader.read(0, 6))


def test_map_frames_helper_strides(tmp_path):
    data = np.arange(3 * 2 * 2, dtype="<u2").reshape(3, 2, 2)
    stride = data[0].nbytes + 4
    blob = b"".join(b"XX" + f.tobytes() + b"YY" for f in data)
    path = tmp_path / "x.raw"
    path.write_bytes(b"0123" + blob)
    frames = map_frames(
        str(path), offset=4 + 2, n_frames=3, sig_shape=(2, 2), dtype="<u2", frame_stride=stride
    )
    assert frames.strides[0] == stride
    assert np.array_equal(frames, data)
    assert isinstance(frames.base, np.memmap) or is_memory_mapped(frames)


def test_raw_source_and_partition_pickle_small(tmp_path):
    path = tmp_path / "frames.raw"
    make_frames((8, 8), (16, 16), "uint16").tofile(path)
    ds = open_dataset(path, nav_shape=(8, 8), sig_shape=(16, 16), dtype="uint16")
    for part in ds.partitions(4, 1024):
        blob = pickle.dumps(part)
        assert len(blob) < 2000
        again = pickle.loads(blob)
        assert isinstance(again.source, MappedFrameSource)
        assert again.source.dtype == ds.dtype


# -- bad input --------------------------------------------------------------------------
def test_raw_missing_options_named(tmp_path):
    path = tmp_path / "frames.raw"
    path.write_bytes(bytes(64))
    with pytest.raises(DataSetError, match=r"pass sig_shape=\.\.\., dtype=\.\.\."):
        open_dataset(path, nav_shape=(2, 2))
    with pytest.raises(DataSetError, match="nav_shape=..., sig_shape=..., dtype=..."):
        open_dataset(path)


def test_raw_truncated_file(tmp_path):
    path = tmp_path / "frames.raw"
    path.write_bytes(bytes(1000))
    before = path.read_bytes()
    with pytest.raises(FormatError) as info:
        open_dataset(path, nav_shape=(4, 4), sig_shape=(8, 8), dtype="uint16")
    msg = str(info.value)
    assert "1000 bytes" in msg and "2048 bytes" in msg and "truncated" in msg
    assert "nav_shape (4, 4) x sig_shape (8, 8) x uint16" in msg
    assert path.read_bytes() == before  # nothing written


def test_raw_trailing_bytes(tmp_path):
    data = make_frames((2, 2), (3, 3), "uint8")
    path = tmp_path / "frames.raw"
    path.write_bytes(data.tobytes() + b"tail")
    with pytest.raises(FormatError, match="allow_trailing=True"):
        open_dataset(path, nav_shape=(2, 2), sig_shape=(3, 3), dtype="uint8")
    ds = open_dataset(path, nav_shape=(2, 2), sig_shape=(3, 3), dtype="uint8", allow_trailing=True)
    assert_reads_equal(ds, data)


def test_raw_missing_file(tmp_path):
    missing = tmp_path / "nope.raw"
    with pytest.raises(DataSetNotFoundError, match="nope.raw"):
        open_dataset(missing, nav_shape=(2,), sig_shape=(2, 2), dtype="u1")
    assert not missing.exists()


@pytest.mark.parametrize(
    "options,phrase",
    [
        ({"dtype": "not-a-dtype"}, "is not a numpy dtype"),
        ({"dtype": "U4"}, "not a plain numeric type"),
        ({"sig_shape": (4,)}, "sig_shape must have 2"),
        ({"nav_shape": (0, 2)}, "nav_shape must have"),
        ({"offset": -1}, "offset must be"),
    ],
)
def test_raw_bad_options(tmp_path, options, phrase):
    path = tmp_path / "frames.raw"
    path.write_bytes(bytes(64))
    kw = {"nav_shape": (2, 2), "sig_shape": (4, 2), "dtype": "u2", **options}
    with pytest.raises(DataSetError, match=phrase):
        open_dataset(path, **kw)


def test_raw_wrong_size_mentions_fix(tmp_path):
    path = tmp_path / "frames.raw"
    path.write_bytes(bytes(math.prod((3, 3, 4, 4)) * 2))
    with pytest.raises(FormatError, match="check nav_shape/sig_shape/dtype"):
        open_dataset(path, nav_shape=(3, 3), sig_shape=(4, 4), dtype="u4")


def test_read_outside_range(tmp_path):
    path = tmp_path / "frames.raw"
    path.write_bytes(bytes(2 * 4))
    ds = open_dataset(path, nav_shape=(2,), sig_shape=(2, 2), dtype="u1")
    with pytest.raises(DataSetError, match="outside"):
        ds.read_frames(1, 3)


def test_mapping_is_reused_across_readers_and_renewed_when_the_file_changes(tmp_path):
    from stem_explorer.io import raw

    data = np.arange(2 * 3 * 4 * 5, dtype=np.uint16).reshape(6, 4, 5)
    path = tmp_path / "d.raw"
    data.tofile(path)
    ds = open_dataset(path, nav_shape=(6,), sig_shape=(4, 5), dtype="uint16")
    mapped = lambda: [k for k in raw._MAPPINGS if k[0] == str(path)]  # noqa: E731
    with ds.source.open() as first, ds.source.open() as second:
        first.read(0, 2), second.read(2, 4)
    assert len(mapped()) == 1  # two readers (two tasks), one mapping
    replaced = data + 1
    os.replace(_write(tmp_path / "new.raw", replaced), path)  # a new inode at the same path
    with ds.source.open() as reader:
        np.testing.assert_array_equal(reader.read(0, 6), replaced)
    assert len(mapped()) == 1 and len(raw._MAPPINGS) <= raw._MAX_MAPPINGS


def _write(path, array):
    array.tofile(path)
    return path


def test_large_mapped_files_give_back_their_pages(tmp_path, monkeypatch):
    """A file above the keep-mapped share of memory drops each read-through's pages
    from this process's mapping on close; the data read stays correct."""
    from stem_explorer.io import raw

    data = np.arange(6 * 64 * 64, dtype=np.uint16).reshape(6, 64, 64)
    data.tofile(tmp_path / "d.raw")
    ds = open_dataset(tmp_path / "d.raw", nav_shape=(6,), sig_shape=(64, 64), dtype="uint16")
    monkeypatch.setattr(raw, "_memory_budget", lambda: 4 * data.nbytes)  # the file is a quarter: kept
    with ds.source.open() as reader:
        view = reader.read(1, 3)
    np.testing.assert_array_equal(view, data[1:3])
    monkeypatch.setattr(raw, "_memory_budget", lambda: data.nbytes)  # now too large to keep
    released = []
    monkeypatch.setattr(raw, "release_mapped_range", lambda *a: released.append(a))
    with ds.source.open() as reader:
        view = reader.read(2, 4)
    assert released == [(str(tmp_path / "d.raw"), 2 * 8192, 4 * 8192)]
    # the real release keeps views valid (pages fault back in from the file)
    monkeypatch.undo()
    monkeypatch.setattr(raw, "_memory_budget", lambda: data.nbytes)
    with ds.source.open() as reader:
        view = reader.read(0, 6)
    assert raw.release_mapped_range(str(tmp_path / "d.raw"), 0, data.nbytes)
    np.testing.assert_array_equal(view, data)


def test_take_gathers_frames_with_and_without_headers(tmp_path):
    """FrameReader.take (the preview's gather) on back-to-back frames and on frames
    with headers between them (a strided mapping, as Merlin and blockfile files)."""
    from stem_explorer.io.raw import MappedFrameSource

    frames = np.arange(9 * 4 * 5, dtype=np.uint16).reshape(9, 4, 5)
    plain = tmp_path / "plain.raw"
    frames.tofile(plain)
    headed = tmp_path / "headed.raw"
    with open(headed, "wb") as f:
        for frame in frames:
            f.write(b"H" * 6)
            f.write(frame.tobytes())
    sources = [
        MappedFrameSource(str(plain), offset=0, n_frames=9, sig_shape=(4, 5), dtype="uint16"),
        MappedFrameSource(str(headed), offset=6, n_frames=9, sig_shape=(4, 5), dtype="uint16", frame_stride=46),
    ]
    indices = np.array([0, 3, 8])
    for source in sources:
        out = np.empty((3, 20), np.uint16)
        with source.open() as reader:
            reader.take(indices, out)
        np.testing.assert_array_equal(out.reshape(3, 4, 5), frames[indices])

"""The raw partition format: writer, sidecar validation, reader, partitions."""

import json
import os
import pickle

import dask.array as da
import h5py
import numpy as np
import pytest

from stem_explorer.errors import ChecksumError, DataSetError, DataSetNotFoundError, FormatError
from stem_explorer.io import open_dataset
from stem_explorer.io.partitioned import (
    RawPartitionDataSet,
    RawPartitionWriter,
    open_raw_partitions,
    sidecar_schema,
    verify_partitions,
    write_raw_partitions,
)
from stem_explorer.io.testing import (
    DTYPES,
    SHAPES,
    assert_reads_equal,
    is_memory_mapped,
    make_frames,
)


def write_parts(dest, data, frames_per_file, **kw):
    """Write ``data`` (nav + sig) with ``frames_per_file`` frames per partition file,
    in deliberately uneven blocks."""
    nav, sig = data.shape[:-2], data.shape[-2:]
    flat = data.reshape((-1,) + sig)
    frame_bytes = flat[0].nbytes
    with RawPartitionWriter(
        dest, nav_shape=nav, sig_shape=sig, dtype=data.dtype,
        partition_bytes=frames_per_file * frame_bytes + frame_bytes // 2, **kw,
    ) as writer:
        pos, step = 0, 1
        while pos < len(flat):
            writer.write(flat[pos : pos + step])
            pos += step
            step = step % 3 + 1
    return dest


def sidecar(dest):
    return json.loads((dest / "dataset.json").read_text())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nav,sig", SHAPES)
def test_partitioned_roundtrip(tmp_path, dtype, nav, sig):
    data = make_frames(nav, sig, dtype, seed=6)
    dest = write_parts(tmp_path / "ds", data, frames_per_file=4)
    doc = sidecar(dest)
    n = data.size // (sig[0] * sig[1])
    assert doc["format"] == "stem_explorer.raw_partitions" and doc["version"] == 1
    assert doc["dtype"] == np.dtype(dtype).str and doc["nav_shape"] == list(nav)
    assert [(p["start"], p["stop"]) for p in doc["partitions"]] == [
        (a, min(n, a + 4)) for a in range(0, n, 4)
    ]
    assert sorted(os.listdir(dest)) == ["dataset.json"] + [p["file"] for p in doc["partitions"]]
    ds = open_dataset(dest)
    assert isinstance(ds, RawPartitionDataSet) and ds.format == "raw_partitions"
    assert ds.shape == data.shape and ds.dtype.str == data.dtype.str
    assert_reads_equal(ds, data, partitions=ds.partitions(1, 1), tile_frames=3)
    assert_reads_equal(ds, data)  # default target: small files grouped
    assert open_dataset(dest / "dataset.json").shape == data.shape


def test_partitions_coincide_with_files(tmp_path):
    data = make_frames((5, 5), (4, 4), "<u2")  # 25 frames, 10 per file -> 10, 10, 5
    dest = write_parts(tmp_path / "ds", data, frames_per_file=10)
    ds = open_dataset(dest)
    file_bounds = {(p["start"], p["stop"]) for p in sidecar(dest)["partitions"]}
    assert file_bounds == {(0, 10), (10, 20), (20, 25)}
    parts = ds.partitions(n_workers=1, target_bytes=1)
    assert [(p.start, p.stop) for p in parts] == [(0, 10), (10, 20), (20, 25)]
    # grouping keeps whole files; counts follow n_workers where the files allow
    for n_workers, target in [(1, None), (2, None), (2, 15 * ds.frame_bytes), (4, 1)]:
        parts = ds.partitions(n_workers=n_workers, target_bytes=target)
        assert parts[0].start == 0 and parts[-1].stop == 25
        for p, q in zip(parts, parts[1:]):
            assert p.stop == q.start
        assert all(p.start in {0, 10, 20} and p.stop in {10, 20, 25} for p in parts)
        assert len(parts) % n_workers == 0 or len(parts) == 3
    assert len(ds.partitions(1, None)) == 1
    assert len(ds.partitions(2, None)) == 2


def test_partition_reads_are_zero_copy_and_small(tmp_path):
    data = make_frames((4, 6), (8, 8), ">u2")
    dest = write_parts(tmp_path / "ds", data, frames_per_file=6)
    ds = open_dataset(dest)
    parts = ds.partitions(1, 1)
    assert len(parts) == 4
    for part in parts:
        blob = pickle.dumps(part)
        assert len(blob) < 2000
        restored = pickle.loads(blob)
        assert len(restored.source.parts) == 1  # only its own file travels
        with restored.source.open() as reader:
            tile = reader.read(part.start + 1, part.stop)
            assert is_memory_mapped(tile) and tile.dtype.str == ">u2"
            assert np.array_equal(tile, data.reshape(-1, 8, 8)[part.start + 1 : part.stop])
            with pytest.raises(DataSetError, match="not in this source's partition files"):
                reader.read(0, 24) if part.start else reader.read(20, 24)
    # a read spanning files (client side) is stitched together
    assert np.array_equal(ds.read_frames(4, 15), data.reshape(-1, 8, 8)[4:15])


def test_locations_from_sidecar(tmp_path):
    data = make_frames((6,), (2, 2), "u1")
    dest = write_parts(tmp_path / "ds", data, frames_per_file=2)
    doc = sidecar(dest)
    hosts = [["node-a", "node-b"], ["node-b"], ["node-c"]]
    for p, h in zip(doc["partitions"], hosts):
        p["locations"] = h
    (dest / "dataset.json").write_text(json.dumps(doc))
    ds = open_dataset(dest)
    parts = ds.partitions(1, 1)
    assert [p.locations for p in parts] == [("node-a", "node-b"), ("node-b",), ("node-c",)]
    assert ds.source.locations(0, 4) == ("node-b",)  # common to both files
    assert ds.source.locations(2, 6) == ("node-b", "node-c")  # none common: any
    assert ds.partitions(1, None)[0].locations == ("node-a", "node-b", "node-c")


def test_write_raw_partitions_from_dataset_array_and_dask(tmp_path):
    data = make_frames((3, 5), (7, 4), "<f4", seed=11)
    h5 = tmp_path / "src.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("frames", data=data, chunks=(2, 2, 7, 4), compression="gzip")
    src = open_dataset(h5)
    out = write_raw_partitions(
        tmp_path / "from_h5",
        src,
        partition_bytes=4 * src.frame_bytes,
        block_bytes=3 * src.frame_bytes,
    )
    assert isinstance(out, RawPartitionDataSet)
    assert_reads_equal(out, data)
    assert out.metadata["source"]["format"] == "hdf5"
    assert verify_partitions(tmp_path / "from_h5") == {"files": 4, "bytes": data.nbytes}

    out = write_raw_partitions(
        tmp_path / "from_np", data, partition_bytes=1, metadata={"note": "x"}
    )
    assert out.metadata["note"] == "x" and out.metadata["n_files"] == 15
    assert_reads_equal(out, data)

    lazy = da.from_array(data, chunks=(1, 2, 7, 4))
    out = write_raw_partitions(tmp_path / "from_dask", lazy, nav_shape=(15,))
    assert out.nav_shape == (15,)
    assert_reads_equal(out, data.reshape(15, 7, 4))


def test_verify_full_detects_flipped_byte(tmp_path):
    data = make_frames((4, 4), (4, 4), "<u2")
    dest = write_parts(tmp_path / "ds", data, frames_per_file=8)
    open_raw_partitions(dest, verify="full")
    part = dest / "part-00001.raw"
    blob = bytearray(part.read_bytes())
    expected = sidecar(dest)["partitions"][1]["sha256"]
    blob[5] ^= 0xFF
    part.write_bytes(bytes(blob))
    open_dataset(dest)  # size check alone does not read the data
    with pytest.raises(ChecksumError) as info:
        open_dataset(dest, verify="full")
    msg = str(info.value)
    assert "part-00001.raw" in msg and expected in msg and "re-ingest or restore" in msg
    with pytest.raises(ChecksumError, match="part-00001.raw"):
        verify_partitions(dest)
    with pytest.raises(DataSetError, match="verify must be"):
        open_dataset(dest, verify="sometimes")


# -- bad sidecars --------------------------------------------------------------------------
@pytest.fixture
def good(tmp_path):
    data = make_frames((2, 3), (4, 4), "<u2")
    return write_parts(tmp_path / "ds", data, frames_per_file=2)


def test_malformed_json(good):
    text = '{"format": "stem_explorer.raw_partitions",\n "version": 1,,}'
    (good / "dataset.json").write_text(text)
    with pytest.raises(FormatError, match=r"not valid JSON: .* line 2 column 15"):
        open_dataset(good)


@pytest.mark.parametrize(
    "edit,phrase",
    [
        (lambda d: d["partitions"][0].update(stop=-1), r"partitions\[0\]\.stop.*minimum"),
        (lambda d: d.pop("dtype"), r"'dtype' is a required property"),
        (lambda d: d.update(dtype="uint16"), r"field dtype.*pattern"),
        (lambda d: d.update(sig_shape=[4]), r"field sig_shape"),
        (lambda d: d["partitions"][1].update(sha256="xyz"), r"partitions\[1\]\.sha256"),
        (lambda d: d["partitions"][0].update(file="../evil.raw"), r"partitions\[0\]\.file"),
        (lambda d: d.update(format="something.else"), r"field format"),
        (lambda d: d.update(colour="red"), r"colour"),
    ],
)
def test_schema_violations_name_the_field(good, edit, phrase):
    doc = sidecar(good)
    edit(doc)
    (good / "dataset.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=phrase):
        open_dataset(good)


def test_unsupported_version(good):
    doc = sidecar(good)
    doc["version"] = 3  # 2 is a compressed data set (tests/test_io_compressed.py)
    (good / "dataset.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="version 3.*reads versions 1 and 2; upgrade stem_explorer"):
        open_dataset(good)


def test_partition_gap_and_overlap(good):
    doc = sidecar(good)
    gap = json.loads(json.dumps(doc))
    del gap["partitions"][1]  # frames 2:4 are nowhere
    (good / "dataset.json").write_text(json.dumps(gap))
    with pytest.raises(FormatError, match=r"gap: frames 2:4 are in no partition file"):
        open_dataset(good)
    over = json.loads(json.dumps(doc))
    over["partitions"][1]["start"] = 1
    over["partitions"][1]["bytes"] = 3 * 32
    (good / "dataset.json").write_text(json.dumps(over))
    both = r"overlap: frames 1:2 are in both part-00000.raw and part-00001.raw"
    with pytest.raises(FormatError, match=both):
        open_dataset(good)
    short = json.loads(json.dumps(doc))
    short["nav_shape"] = [2, 4]
    (good / "dataset.json").write_text(json.dumps(short))
    with pytest.raises(FormatError, match=r"frames 6:8 are in no partition file"):
        open_dataset(good)


def test_missing_and_truncated_part_files(good):
    part = good / "part-00002.raw"
    blob = part.read_bytes()
    part.write_bytes(blob[:-3])
    with pytest.raises(FormatError, match="part-00002.raw.*truncated"):
        open_dataset(good)
    part.unlink()
    with pytest.raises(DataSetNotFoundError, match="part-00002.raw.*missing"):
        open_dataset(good)


def test_directory_without_sidecar(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSetError):
        open_dataset(tmp_path / "empty")
    with pytest.raises(DataSetNotFoundError, match="no dataset.json"):
        open_raw_partitions(tmp_path / "empty")


# -- the writer ------------------------------------------------------------------------------
def test_writer_interrupted_leaves_nothing(tmp_path):
    data = make_frames((4, 4), (4, 4), "<u2")
    layout = {"nav_shape": (4, 4), "sig_shape": (4, 4), "dtype": "<u2"}
    dest = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="boom"):
        with RawPartitionWriter(dest, **layout, partition_bytes=3 * 32) as w:
            w.write(data.reshape(-1, 4, 4)[:7])  # two finished files, one in progress
            assert any(name.endswith(".tmp") for name in os.listdir(dest))
            raise RuntimeError("boom")
    assert not dest.exists()  # the writer created it, and removed it again
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    with pytest.raises(RuntimeError):
        with RawPartitionWriter(dest, **layout, partition_bytes=64) as w:
            w.write(data.reshape(-1, 4, 4)[:5])
            raise RuntimeError("boom")
    assert os.listdir(dest) == ["notes.txt"]


def test_writer_too_few_frames_publishes_nothing(tmp_path):
    dest = tmp_path / "ds"
    data = make_frames((3, 3), (2, 2), "u1")
    with pytest.raises(DataSetError, match="only 5 of the 9 frames.*no dataset.json"):
        with RawPartitionWriter(
            dest, nav_shape=(3, 3), sig_shape=(2, 2), dtype="u1", partition_bytes=8
        ) as w:
            w.write(data.reshape(-1, 2, 2)[:5])
    assert not dest.exists()


def test_writer_rejects_wrong_blocks(tmp_path):
    dest = tmp_path / "ds"
    with pytest.raises(DataSetError, match=r"block dtype <u2 differs.*astype\('>u2'\)"):
        with RawPartitionWriter(dest, nav_shape=(4,), sig_shape=(2, 2), dtype=">u2") as w:
            w.write(np.zeros((1, 2, 2), "<u2"))
    with pytest.raises(DataSetError, match=r"block of shape \(1, 2, 3\)"):
        with RawPartitionWriter(dest, nav_shape=(4,), sig_shape=(2, 2), dtype="u1") as w:
            w.write(np.zeros((1, 2, 3), "u1"))
    with pytest.raises(DataSetError, match="would make 5"):
        with RawPartitionWriter(dest, nav_shape=(4,), sig_shape=(2, 2), dtype="u1") as w:
            w.write(np.zeros((5, 2, 2), "u1"))
    assert not dest.exists()


def test_writer_existing_dataset_and_overwrite(tmp_path):
    data = make_frames((2, 3), (4, 4), "<u2")
    dest = write_parts(tmp_path / "ds", data, frames_per_file=1)
    before = {name: (dest / name).read_bytes() for name in os.listdir(dest)}
    with pytest.raises(DataSetError, match="already holds a data set.*overwrite=True"):
        RawPartitionWriter(dest, nav_shape=(2,), sig_shape=(4, 4), dtype="<u2").__enter__()
    assert {name: (dest / name).read_bytes() for name in os.listdir(dest)} == before
    new = make_frames((2,), (4, 4), "<u2", seed=99)
    write_parts(dest, new, frames_per_file=5, overwrite=True)
    assert sorted(os.listdir(dest)) == ["dataset.json", "part-00000.raw"]  # old parts gone
    assert_reads_equal(open_dataset(dest), new)


def test_schema_file_is_draft_2020_12():
    schema = sidecar_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("depth", [100_000, 5_000])
def test_deeply_nested_sidecar_is_a_format_error(tmp_path, depth):
    """A dataset.json nested deeper than Python's recursion limit raised RecursionError."""
    data = np.arange(2 * 3 * 4 * 4, dtype="u2").reshape(2, 3, 4, 4)
    folder = tmp_path / "set"
    write_raw_partitions(folder, data)
    sidecar = folder / "dataset.json"
    text = json.dumps(json.loads(sidecar.read_text()))
    nested = "[" * depth + "]" * depth
    sidecar.write_text(text[:-1] + f', "extra": {nested}}}')
    with pytest.raises(FormatError, match="nested too deeply") as info:
        open_dataset(folder)
    assert str(sidecar) in str(info.value)

"""Compressed raw partitions: every codec round trip, the sidecar's version 2, damaged
chunks, and analyses equal to those on the uncompressed files (ingestion with a codec
and codecs missing on a worker: tests/test_ingest_codec.py; HDFS: tests/test_hdfs.py)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from stem_explorer.errors import CodecError, DataSetError, FormatError
from stem_explorer.io import open_dataset
from stem_explorer.io.partitioned import (
    RawPartitionWriter,
    open_raw_partitions,
    verify_partitions,
    write_raw_partitions,
)
from stem_explorer.io.partitioned import codecs
from stem_explorer.io.partitioned.sidecar import validate_sidecar
from stem_explorer.io.testing import SHAPES, make_frames, read_through_partitions

CODECS = [name for name in codecs.CODECS if name != "none"]
DTYPES = ["uint8", "uint16", ">u2", "float32", "int64"]


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of about 3 frames of the test shapes, so every file holds several."""
    monkeypatch.setattr(codecs, "CHUNK_BYTES", 200)


def write_uneven(dest, data, frames_per_file, codec):
    """``data`` written in blocks of 1, 2, 3, 1, ... frames (never chunk-aligned)."""
    nav, sig = data.shape[:-2], data.shape[-2:]
    flat = data.reshape((-1,) + sig)
    with RawPartitionWriter(dest, nav_shape=nav, sig_shape=sig, dtype=data.dtype, codec=codec,
                            partition_bytes=frames_per_file * flat[0].nbytes) as writer:
        pos, step = 0, 1
        while pos < len(flat):
            writer.write(flat[pos : pos + step])
            pos += step
            step = step % 3 + 1
    return open_raw_partitions(dest, verify="full")


def counting(nav, sig, dose, dtype="uint16", seed=0):
    """Poisson counts, ``dose`` electrons per frame on average (a bright centre)."""
    rng = np.random.default_rng(seed)
    y, x = np.indices(sig)
    weight = np.exp(-((y - sig[0] / 2) ** 2 + (x - sig[1] / 2) ** 2) / (sig[0] * sig[1] / 8))
    lam = dose * weight / weight.sum()
    return rng.poisson(lam, size=tuple(nav) + tuple(sig)).astype(dtype)


def sidecar(dest):
    return json.loads((dest / "dataset.json").read_text())


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nav,sig", SHAPES + [((9, 11), (13, 6))])
def test_every_codec_round_trips(tmp_path, small_chunks, codec, dtype, nav, sig):
    data = make_frames(nav, sig, dtype, seed=11)
    flat = data.reshape((-1,) + tuple(sig))
    ds = write_uneven(tmp_path / "ds", data, frames_per_file=7, codec=codec)
    doc = sidecar(tmp_path / "ds")
    per = doc["codec"]["chunk_frames"]
    assert doc["version"] == 2 and doc["codec"]["name"] == codec and doc["codec"]["config"]["id"] == "blosc"
    assert all(p["start"] % per == 0 and p["file"].endswith("." + codec) for p in doc["partitions"])
    assert ds.dtype.str == np.dtype(dtype).str and ds.shape == data.shape
    assert ds.source.frame_alignment == per
    got = read_through_partitions(ds, tile_frames=5)  # tiles of whole chunks, as tasks read them
    assert got.dtype == data.dtype and np.array_equal(got, data)
    n = len(flat)
    for a, b in {(0, n), (n // 3, max(n // 3, n - 1)), (n - 1, n), (min(1, n - 1), min(2, n))}:  # cutting chunks, files
        assert np.array_equal(ds.read_frames(a, b), flat[a:b]), (a, b)
    indices = np.unique(np.random.default_rng(1).integers(0, n, size=min(n, 6)))
    out = np.empty((len(indices),) + tuple(sig), data.dtype)
    with ds.source.open() as reader:
        reader.take(indices, out)
    assert np.array_equal(out, flat[indices])


def test_counting_data_compresses_and_stays_exact(tmp_path):
    data = counting((16, 16), (64, 64), dose=400)  # 0.1 electron per pixel
    raw = write_raw_partitions(tmp_path / "raw", data, partition_bytes=2**20)
    packed = write_raw_partitions(tmp_path / "lz4", data, partition_bytes=2**20, codec="bslz4")
    stored = sum(p["bytes"] for p in sidecar(tmp_path / "lz4")["partitions"])
    assert stored * 8 < raw.nbytes == packed.nbytes  # at least 8x smaller
    assert np.array_equal(packed.read_frames(0, packed.n_frames), raw.read_frames(0, raw.n_frames))
    assert packed.metadata["read_path"].startswith("decode bslz4")


def test_uncompressed_sidecar_is_unchanged(tmp_path):
    data = make_frames((4, 3), (5, 6), "<u2", seed=2)
    write_raw_partitions(tmp_path / "ds", data, partition_bytes=4 * 60)
    doc = sidecar(tmp_path / "ds")
    assert doc["version"] == 1 and "codec" not in doc
    assert sorted(os.listdir(tmp_path / "ds")) == ["dataset.json"] + [f"part-0000{i}.raw" for i in range(3)]
    assert all(list(p) == ["file", "start", "stop", "bytes", "sha256"] for p in doc["partitions"])


def test_unknown_codec_names_the_choices(tmp_path):
    with pytest.raises(DataSetError, match="unknown codec 'lz5'.*bslz4"):
        write_raw_partitions(tmp_path / "ds", np.zeros((2, 4, 4), np.uint8), codec="lz5")
    assert not (tmp_path / "ds").exists()


def compressed_doc(tmp_path):
    data = counting((4, 4), (16, 16), dose=20)
    write_raw_partitions(tmp_path / "ds", data, partition_bytes=8 * 512, codec="zstd1")
    return sidecar(tmp_path / "ds")


@pytest.mark.parametrize("break_it,message", [
    (lambda d: d.update(version=1), "version.*2"),
    (lambda d: d.pop("codec"), "field version: 1 was expected"),  # no codec: version 1, no chunks
    (lambda d: d["partitions"][0].pop("chunk_crc32c"), "chunk_crc32c"),
    (lambda d: d["partitions"][0]["chunk_bytes"].append(5), "2 chunk sizes and 1 checksums"),
    (lambda d: d["partitions"][0].update(bytes=d["partitions"][0]["bytes"] + 1), "chunks add up to"),
    (lambda d: d["codec"].update(chunk_frames=3), "frames 0:8 make 3 chunks of 3 frames"),
    (lambda d: d["codec"].update(chunk_frames=16), "00001.zstd1 starts at frame 8, not at a multiple of codec.chunk_"),
    (lambda d: d["codec"]["config"].pop("id"), "config"),
    (lambda d: d["partitions"][1]["chunk_crc32c"].__setitem__(0, 2**32), "chunk_crc32c"),
])
def test_sidecar_of_compressed_files_is_checked(tmp_path, break_it, message):
    doc = compressed_doc(tmp_path)
    validate_sidecar(doc)
    break_it(doc)
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=message):
        open_raw_partitions(tmp_path / "ds")


def test_uncompressed_files_take_no_chunk_fields(tmp_path):
    data = make_frames((2, 2), (4, 4), "uint8")
    write_raw_partitions(tmp_path / "ds", data)
    doc = sidecar(tmp_path / "ds")
    doc["partitions"][0]["chunk_bytes"] = [16]
    with pytest.raises(FormatError, match="chunk_bytes"):
        validate_sidecar(doc)


def test_a_codec_numcodecs_lacks_names_it_and_the_package(tmp_path):
    doc = compressed_doc(tmp_path)
    doc["codec"]["config"] = {"id": "jpeg_xl_9000"}
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps(doc))
    ds = open_raw_partitions(tmp_path / "ds")  # the sidecar is fine: only reading needs the codec
    with pytest.raises(CodecError, match=r"codec zstd1 \(numcodecs jpeg_xl_9000\).*package providing the "
                                         r"numcodecs codec 'jpeg_xl_9000'.*stem_explorer\[compression\]"):
        ds.read_frames(0, 1)


def damage(path, offset, xor=0x40):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ xor]))


@pytest.fixture
def damaged(tmp_path, monkeypatch):
    """A compressed set whose second file has its third chunk damaged (one bit)."""
    data = counting((6, 10), (8, 8), dose=30, seed=4)  # 60 frames of 128 bytes
    monkeypatch.setattr(codecs, "CHUNK_BYTES", 3 * 128)  # chunks of 3 frames
    ds = write_raw_partitions(tmp_path / "ds", data, partition_bytes=12 * 128, codec="bslz4")
    part = sidecar(tmp_path / "ds")["partitions"][1]
    assert (part["start"], part["stop"]) == (12, 24)
    offset = sum(part["chunk_bytes"][:2]) + part["chunk_bytes"][2] // 2
    damage(tmp_path / "ds" / part["file"], offset)
    return ds, data.reshape(-1, 8, 8), str(tmp_path / "ds" / part["file"])


def test_a_damaged_chunk_names_file_and_frames(damaged):
    ds, flat, path = damaged
    for a, b in [(0, 60), (12, 24), (19, 20), (18, 21)]:
        with pytest.raises(FormatError, match=rf"partition file '{path}' is damaged: its compressed chunk 2 "
                                              rf"\(frames 18:21, bytes \d+:\d+, codec bslz4\) does not match "
                                              rf"its CRC-32C"):
            ds.read_frames(a, b)
    assert np.array_equal(ds.read_frames(0, 18), flat[:18])  # the rest reads as it was written
    assert np.array_equal(ds.read_frames(21, 60), flat[21:])
    with pytest.raises(Exception, match="sha256"):
        verify_partitions(ds.path)


def test_a_blosc_header_that_lies_is_refused_before_decoding(tmp_path):
    """A chunk whose checksum matches (the sidecar rewritten with it) but whose Blosc
    header claims more bytes than the chunk holds must not reach Blosc, which would
    read past the chunk."""
    import google_crc32c

    data = counting((2, 4), (8, 8), dose=30)
    write_raw_partitions(tmp_path / "ds", data, codec="bslz4")
    doc = sidecar(tmp_path / "ds")
    path = tmp_path / "ds" / doc["partitions"][0]["file"]
    raw = bytearray(path.read_bytes())
    raw[12:16] = (len(raw) * 100).to_bytes(4, "little")
    path.write_bytes(bytes(raw))
    doc["partitions"][0]["chunk_crc32c"] = [google_crc32c.value(bytes(raw))]
    doc["partitions"][0]["sha256"] = "0" * 64
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=r"chunk 0 \(frames 0:8.*Blosc header saying 1024 bytes compressed to"):
        open_dataset(tmp_path / "ds").read_frames(0, 8)


def test_damaged_chunks_leave_the_reading_process_alive(tmp_path):
    """In a separate process: each kind of damage to a chunk (a flipped bit, zeros,
    random bytes, a cut file) is a FormatError, also when the checksums are made to
    match so the codec itself sees the damage; the process then reads the intact
    frames and exits normally."""
    script = textwrap.dedent(f"""
        import json, os, shutil, sys
        import numpy as np, google_crc32c
        from stem_explorer.errors import FormatError
        from stem_explorer.io.partitioned import codecs, write_raw_partitions, open_raw_partitions

        codecs.CHUNK_BYTES = 4 * 4096
        rng = np.random.default_rng(0)
        data = rng.poisson(0.3, size=(64, 32, 64)).astype("uint16")
        base = {str(tmp_path / "base")!r}
        write_raw_partitions(base, data, partition_bytes=16 * 4096, codec="bslz4")
        outcomes = []
        for kind in ("flip", "zeros", "random", "cut"):
            for matching in (False, True):
                dest = base + "-" + kind + str(matching)
                shutil.copytree(base, dest)
                doc = json.load(open(dest + "/dataset.json"))
                part = doc["partitions"][1]
                path = dest + "/" + part["file"]
                raw = bytearray(open(path, "rb").read())
                lo = part["chunk_bytes"][0]
                hi = lo + part["chunk_bytes"][1]
                if kind == "flip":
                    raw[lo + 20] ^= 1
                elif kind == "zeros":
                    raw[lo + 16:hi] = bytes(hi - lo - 16)
                elif kind == "random":
                    raw[lo:hi] = rng.integers(0, 256, hi - lo, dtype=np.uint8).tobytes()
                else:
                    raw = raw[:lo + 40]
                open(path, "wb").write(bytes(raw))
                if matching and kind != "cut":
                    part["chunk_crc32c"][1] = google_crc32c.value(bytes(raw[lo:hi]))
                    json.dump(doc, open(dest + "/dataset.json", "w"))
                if kind == "cut":
                    try:
                        open_raw_partitions(dest)
                    except FormatError as exc:
                        outcomes.append((kind, matching, "FormatError", "truncated" in str(exc)))
                    continue
                ds = open_raw_partitions(dest)
                try:
                    got = ds.read_frames(0, 64)
                    outcomes.append((kind, matching, "read", bool(np.array_equal(got, data))))
                except FormatError as exc:
                    outcomes.append((kind, matching, "FormatError", "frames 20:24" in str(exc)))
                assert np.array_equal(ds.read_frames(24, 64), data[24:])
                assert np.array_equal(ds.read_frames(0, 20), data[:20])
        print(json.dumps(outcomes))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcomes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(outcomes) == 8
    for kind, matching, what, detail in outcomes:
        # damage the checksum sees is always refused, naming the chunk's frames (a cut
        # file: at open); with forged checksums Blosc itself decides, and the process
        # survived whatever it decided (returncode 0 above)
        if not matching or kind == "cut":
            assert (what, detail) == ("FormatError", True), (kind, matching, what, detail)


def test_tasks_over_compressed_files_decode_cache_sized_tiles(tmp_path, monkeypatch):
    """A task reads compressed partitions in tiles of at most ``DECODED_TILE_BYTES``
    (whole chunks), however large the job's tile, with results equal to numpy's."""
    from stem_explorer import SumFrame, VirtualDetector, masks
    from stem_explorer.analyses.plan import build_plan
    from stem_explorer.engine.tasks import run_local
    from stem_explorer.io.partitioned import chunks, reader

    monkeypatch.setattr(codecs, "CHUNK_BYTES", 3 * 64 * 64 * 2)  # 3 frames a chunk
    monkeypatch.setattr(reader, "DECODED_TILE_BYTES", 7 * 64 * 64 * 2)  # 2 chunks a tile
    data = counting((10, 7), (64, 64), dose=300)
    ds = write_raw_partitions(tmp_path / "ds", data, partition_bytes=2**20, codec="bslz4")
    assert ds.source.frame_alignment == 3
    reads = []
    decode = chunks.ChunkDecoder.read
    monkeypatch.setattr(chunks.ChunkDecoder, "read",
                        lambda self, start, stop: reads.append(stop - start) or decode(self, start, stop))
    disk = masks.Disk(32, 32, 9)
    plan, finalize = build_plan([VirtualDetector({"bf": disk}), SumFrame()], ds, tile_bytes=2**30)
    results = finalize(run_local(ds.partitions(2), plan), np.ones(ds.n_frames, bool))
    assert reads and max(reads) == 6  # two whole chunks, not the job's 1 GiB tile
    wanted = data.astype(np.float64)
    np.testing.assert_allclose(results["vd/bf"].data, (wanted * disk.rasterize((64, 64))).sum(axis=(-2, -1)))
    np.testing.assert_allclose(results["sum/frame"].data, wanted.sum(axis=(0, 1)))

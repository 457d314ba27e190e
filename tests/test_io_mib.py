"""Quantum Detectors Merlin ``.mib`` reader.

Real files (``../shared/realdata/merlin_mib``, skipped when absent) are checked end to
end through the engine against their reference sum frame and virtual bright field.

Synthetic files are written by ``stem_explorer.io.synthetic.write_mib`` (shared with the
format benchmark) from the frame header layout of the Quantum Detectors
Merlin manual ("MQ1" acquisition header: MQ1, sequence number, data offset, number of
chips, width, height, pixel depth, sensor layout, chip select, time stamp, shutter
time, counter, colour mode, gain mode, 8 thresholds, per-chip DACs, then the "MQ1A"
extension: time stamp, shutter time in ns, counter depth; padded with NULs to the
data offset; 12-bit pixels as big-endian uint16, 24-bit as big-endian uint32) and the
``.hdr`` ``Key (unit):<TAB>value`` lines, as cross-checked against the real files. The
packed 1-bit layout ("U01": eight pixels per byte, first pixel in the most significant
bit) is this reader's documented convention; Merlin's own 1-bit files store U08.
"""

import os

import numpy as np
import pytest

from stem_explorer import masks
from stem_explorer.analyses import SumFrame, VirtualDetector, build_plan
from stem_explorer.engine import run_local
from stem_explorer.errors import DataSetError, FormatError
from stem_explorer.io import find_reader, open_dataset
from stem_explorer.io.mib import parse_frame_header
from stem_explorer.io.synthetic import mib_header, write_mib
from stem_explorer.io.testing import is_memory_mapped, read_through_partitions

#: real data sets and the options they need (none: the 4x2 scans' .hdr says one frame
#: per trigger, and their scan shape comes from the line flyback gap in the time stamps)
MIB_CASES = {
    "mib_001_4x2_6bit": {},
    "mib_002_4x2_6bit_roi128": {},
    "mib_002_sig256x128_u16": {},
    "mib_003_sig256x64_u16": {},
    "mib_single_9frames_1bit": {},
    "mib_single_9frames_6bit": {},
    "mib_single_9frames_12bit": {},
    "mib_single_9frames_24bit": {},
    "mib_quad_9frames_1bit": {},
    "mib_quad_9frames_6bit": {},
    "mib_quad_9frames_12bit": {},
}


def assert_matches_references(realdata, key: str, **options):
    """Open the manifest entry ``key`` and check shape, dtype, and the sum frame and
    virtual bright field computed by the engine against the reference arrays."""
    entry = realdata.entry(key)
    ds = open_dataset(realdata.file(entry["files"][0]), **options)
    assert list(ds.shape) == entry["shape"]
    assert ds.dtype == np.dtype(entry["dtype"])  # as stored (the manifest gives the stored dtype)
    refs = {name: realdata.file(ref) for ref in entry["refs"] for name in ("sum_frame", "vbf") if ref.endswith(f".{name}.npy")}
    cy, cx, r = entry["vbf_disk_cy_cx_r"]
    plan, finalize = build_plan([SumFrame(), VirtualDetector({"vbf": masks.Disk(cy, cx, r)})], ds)
    parts = ds.partitions(2, target_bytes=3 * ds.frame_bytes)  # several partitions
    results = finalize(run_local(parts, plan), np.ones(ds.n_frames, bool))
    np.testing.assert_array_equal(results["sum/frame"].data, np.load(refs["sum_frame"]))
    np.testing.assert_allclose(results["vd/vbf"].data, np.load(refs["vbf"]).reshape(ds.nav_shape))
    return ds


@pytest.mark.parametrize("key", sorted(MIB_CASES))
def test_real_files_match_references(realdata, key):
    ds = assert_matches_references(realdata, key, **MIB_CASES[key])
    assert ds.format == "mib"
    assert ds.metadata["counter_depth"] in (1, 6, 12, 24)
    stored = np.dtype(realdata.entry(key)["dtype"])
    assert ds.metadata["stored_dtype"] == stored.str
    assert ds.dtype == stored
    with ds.source.open() as reader:  # every real file is mapped as stored
        assert is_memory_mapped(reader.read(0, 2))
    decoded = open_dataset(ds.path, native=True, **MIB_CASES[key])
    assert decoded.dtype == stored.newbyteorder("=")
    with decoded.source.open() as reader:  # big-endian counts swapped, uint8 still mapped
        assert is_memory_mapped(reader.read(0, 2)) == stored.isnative
        np.testing.assert_array_equal(reader.read(0, ds.n_frames), ds.read_frames(0, ds.n_frames))


def test_every_real_mib_file_is_covered(realdata):
    keys = {k for k in realdata.manifest if k.startswith("mib_")}
    assert keys <= set(MIB_CASES), keys - set(MIB_CASES)


def test_real_scan_shape_from_hdr(realdata):
    entry = realdata.entry("mib_002_sig256x128_u16")
    ds = open_dataset(realdata.file(entry["files"][0]))
    assert ds.nav_shape == (2, 4)
    assert ds.metadata["scan_shape_source"] == ".hdr Frames per Trigger"
    assert ds.metadata["chips"] == 1 and ds.metadata["pixel_depth"] == "U16"
    assert ds.metadata["exposure_s"] == pytest.approx(0.001)


@pytest.mark.parametrize("key", ["mib_001_4x2_6bit", "mib_002_4x2_6bit_roi128"])
def test_real_scan_shape_from_time_stamps(realdata, key):
    """Their .hdr says one frame per trigger; the frames come every 102 ms, and 21 us
    later after the fourth (the line flyback): a 2 x 4 scan, as HyperSpy infers it."""
    ds = open_dataset(realdata.file(realdata.entry(key)["files"][0]))
    assert ds.nav_shape == (2, 4)
    assert ds.metadata["scan_shape_source"].startswith("frame time stamps")


@pytest.mark.parametrize("key", ["mib_single_9frames_24bit", "mib_quad_9frames_6bit"])
def test_real_stack_without_flyback_stays_a_stack(realdata, key):
    ds = open_dataset(realdata.file(realdata.entry(key)["files"][0]))
    assert ds.nav_shape == (9,)
    assert "no line flyback gap" in ds.metadata["scan_shape_source"]
    assert "nav_shape=(rows, columns)" in ds.metadata["scan_shape_hint"]


# -- synthetic files ----------------------------------------------------------------------------
def timed_headers(n, period_ns, *, gaps=(), gap_ns=50_000, jitter_ns=0, seed=0, **fields):
    """Frame headers whose time stamps come every ``period_ns`` (plus up to
    ``jitter_ns``), ``gap_ns`` later before each frame in ``gaps``."""
    rng = np.random.default_rng(seed)
    steps = period_ns + rng.integers(0, jitter_ns + 1, n)
    steps[list(gaps)] += gap_ns
    times = np.datetime64("2024-05-01T12:00:00", "ns") + np.cumsum(steps).astype("timedelta64[ns]")
    return [mib_header(i + 1, timestamp=t, **fields) for i, t in enumerate(times)]


@pytest.mark.parametrize("jitter_ns", [0, 300])
def test_scan_shape_from_line_flyback(tmp_path, jitter_ns):
    fields = dict(width=8, height=4, pixel_depth="U08", counter_depth=6)
    data = random_frames((5 * 6, 4, 8), np.uint8, 64)
    headers = timed_headers(30, 1_000_000, gaps=range(6, 30, 6), jitter_ns=jitter_ns, **fields)
    path = write_mib(tmp_path / "scan.mib", data, headers=headers, pixel_depth="U08",
                     counter_depth=6, hdr={"Frames per Trigger (Number)": 1})
    ds = open_dataset(path)
    assert ds.nav_shape == (5, 6)
    assert ds.metadata["scan_shape_source"] == "frame time stamps (line flyback gap after every 6 frames)"
    np.testing.assert_array_equal(read_through_partitions(ds), data.reshape(5, 6, 4, 8))
    assert open_dataset(path, nav_shape=(30,)).nav_shape == (30,)  # the option wins


@pytest.mark.parametrize("case", ["uniform", "jitter", "irregular_gaps", "partial_line"])
def test_no_scan_shape_from_time_stamps(tmp_path, case, capsys):
    """Time stamps that show no regular line flyback leave a stack, and `info` says how
    to give the scan shape."""
    fields = dict(width=8, height=4, pixel_depth="U08", counter_depth=6)
    n = 26 if case == "partial_line" else 24
    if case == "uniform":
        headers = timed_headers(n, 1_000_000, **fields)
    elif case == "jitter":  # noise alone must not pass for a flyback
        headers = timed_headers(n, 1_000_000, jitter_ns=20_000, seed=5, **fields)
    elif case == "irregular_gaps":  # pauses, but not one every line
        headers = timed_headers(n, 1_000_000, gaps=(4, 11, 15), **fields)
    else:  # lines of 6 frames, the acquisition stopped 2 frames into the fifth line
        headers = timed_headers(n, 1_000_000, gaps=range(6, n, 6), **fields)
    data = random_frames((len(headers), 4, 8), np.uint8, 64)
    path = write_mib(tmp_path / "stack.mib", data, headers=headers, pixel_depth="U08", counter_depth=6)
    ds = open_dataset(path)
    assert ds.nav_shape == (len(headers),)
    source = ds.metadata["scan_shape_source"]
    assert source.startswith("frame count (stack)")
    if case == "partial_line":
        assert "lines of 6 frames" in source and "26 frames" in source
    else:
        assert "no line flyback gap" in source
    from stem_explorer.cli import main

    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "nav_shape=(rows, columns)" in out and "--nav-shape ROWS COLUMNS" in out



def random_frames(shape, dtype, top, seed=0):
    return np.random.default_rng(seed).integers(0, top, shape).astype(dtype)


def test_4d_scan_12bit_zero_copy_or_decoded_with_scan_from_hdr(tmp_path):
    data = random_frames((12, 8, 16), ">u2", 4096)  # ROI-like: fewer rows than columns
    path = write_mib(tmp_path / "scan.mib", data, pixel_depth="U16", counter_depth=12,
                     hdr={"Frames in Acquisition (Number)": 12, "Frames per Trigger (Number)": 4,
                          "Counter Depth (number)": 12})
    ds = open_dataset(path, native=True)
    assert ds.nav_shape == (3, 4) and ds.sig_shape == (8, 16)
    assert ds.dtype == np.dtype("=u2") and ds.metadata["stored_dtype"] == ">u2"
    assert ds.metadata["scan_shape_source"] == ".hdr Frames per Trigger"
    assert ds.metadata["counter_depth"] == 12 and ds.metadata["exposure_s"] == 0.002
    np.testing.assert_array_equal(read_through_partitions(ds), data.reshape(3, 4, 8, 16))
    with ds.source.open() as reader:  # swapped into one reused buffer
        a = reader.read(2, 5)
        assert not is_memory_mapped(a) and np.shares_memory(a, reader.read(5, 8))
    kept = open_dataset(path)  # the default: zero-copy, as stored
    assert kept.dtype == np.dtype(">u2") and kept.metadata["read_path"] == "mmap"
    np.testing.assert_array_equal(read_through_partitions(kept), data.reshape(3, 4, 8, 16))
    with kept.source.open() as reader:
        assert is_memory_mapped(reader.read(2, 5))


def test_24bit_big_endian(tmp_path):
    data = random_frames((5, 4, 8), ">u4", 2**24, seed=1)
    path = write_mib(tmp_path / "d24.mib", data, pixel_depth="U32", counter_depth=24)
    ds = open_dataset(path, native=True)
    assert ds.nav_shape == (5,) and ds.dtype == np.dtype("=u4")
    assert ds.metadata["scan_shape_source"].startswith("frame count (stack)")
    np.testing.assert_array_equal(read_through_partitions(ds), data)
    kept = open_dataset(path)
    assert kept.dtype == np.dtype(">u4")
    np.testing.assert_array_equal(read_through_partitions(kept), data)
    with kept.source.open() as reader:
        assert is_memory_mapped(reader.read(0, 5))


def test_1bit_packed_decodes_into_reused_buffer(tmp_path):
    bits = random_frames((6, 4, 16), np.uint8, 2, seed=2)
    ds = open_dataset(write_mib(tmp_path / "d1.mib", bits, pixel_depth="U01", counter_depth=1),
                      nav_shape=(2, 3))
    assert ds.dtype == np.uint8 and ds.shape == (2, 3, 4, 16)
    assert ds.metadata["read_path"].startswith("decode")
    np.testing.assert_array_equal(read_through_partitions(ds, tile_frames=4), bits.reshape(2, 3, 4, 16))
    with ds.source.open() as reader:
        a = reader.read(0, 3)
        b = reader.read(3, 6)
        assert np.shares_memory(a, b)  # one buffer, reused
        np.testing.assert_array_equal(b, bits[3:6])


def test_quad_header_and_sniffing_without_suffix(tmp_path):
    data = random_frames((2, 16, 16), np.uint8, 64, seed=3)
    headers = [mib_header(i + 1, width=16, height=16, pixel_depth="U08", counter_depth=6, chips=4) for i in range(2)]
    path = write_mib(tmp_path / "quad_frames", data, pixel_depth="U08", counter_depth=6, headers=headers)
    assert find_reader(path).name == "mib"
    ds = open_dataset(path)
    assert ds.metadata["chips"] == 4 and ds.metadata["header_bytes"] == 768
    np.testing.assert_array_equal(ds.read_frames(0, 2), data)


def test_truncated_last_frame(tmp_path):
    data = random_frames((3, 4, 8), ">u2", 4096)
    path = write_mib(tmp_path / "cut.mib", data, pixel_depth="U16", counter_depth=12)
    os.truncate(path, os.path.getsize(path) - 10)
    with pytest.raises(FormatError, match=r"cut\.mib.*2 whole frames of 448 bytes.*truncated"):
        open_dataset(path)


def test_raw_mode_is_not_supported_yet(tmp_path):
    head = mib_header(1, width=8, height=4, pixel_depth="R64", counter_depth=12)
    path = tmp_path / "raw.mib"
    path.write_bytes(head + bytes(8 * 4 * 8))
    assert parse_frame_header(head).is_raw
    with pytest.raises(FormatError, match="not supported yet"):
        open_dataset(path)


def test_mixed_counter_depths(tmp_path):
    data = random_frames((3, 4, 8), np.uint8, 2)
    headers = [mib_header(i + 1, width=8, height=4, pixel_depth="U08", counter_depth=d) for i, d in enumerate((1, 1, 6))]
    path = write_mib(tmp_path / "mixed.mib", data, pixel_depth="U08", counter_depth=1, headers=headers)
    with pytest.raises(FormatError, match=r"counter depth 1 in frame 0 but 6 in frame 2"):
        open_dataset(path)


@pytest.mark.parametrize("sizes,message", [
    ((384, 384, 512), "header size 384 in frame 0 but 512 in frame 2"),
    ((384, 512, 384, 384), "frame 2 of .* does not start with a Merlin header at byte 832"),
])
def test_mixed_header_sizes(tmp_path, sizes, message):
    data = random_frames((len(sizes), 4, 8), np.uint8, 64)
    headers = [mib_header(i + 1, width=8, height=4, pixel_depth="U08", counter_depth=6, header_bytes=size)
               for i, size in enumerate(sizes)]
    path = write_mib(tmp_path / "sizes.mib", data, pixel_depth="U08", counter_depth=6, headers=headers)
    with pytest.raises(FormatError, match=message):
        open_dataset(path)


def test_frame_count_not_multiple_of_scan_width(tmp_path):
    data = random_frames((10, 4, 8), np.uint8, 64)
    path = write_mib(tmp_path / "partial.mib", data, pixel_depth="U08", counter_depth=6,
                     hdr={"Frames per Trigger (Number)": 4})
    with pytest.raises(DataSetError, match="10 frames, not a multiple of the scan width 4"):
        open_dataset(path)
    with pytest.raises(DataSetError, match=r"nav_shape \(3, 4\) has 12 positions"):
        open_dataset(path, nav_shape=(3, 4))
    ds = open_dataset(path, nav_shape=(10,))
    assert ds.metadata["scan_shape_source"] == "nav_shape option"
    np.testing.assert_array_equal(read_through_partitions(ds), data)


def test_not_a_mib_file(tmp_path):
    path = tmp_path / "junk.mib"
    path.write_bytes(b"hello world" * 10)
    with pytest.raises(FormatError, match="Merlin frame header"):
        open_dataset(path)

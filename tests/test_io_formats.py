"""Detector formats without real files in ../shared/realdata: blockfile, TIA ser, DM3/DM4,
EMPAD, zarr and the HDF5 layouts of HyperSpy, py4DSTEM/EMD 1.0, Prismatic and fpd.

Every test writes its file from the format's specification (headers included; each
writer names the description it follows; the blockfile and zarr writers live in
``stem_explorer.io.synthetic``, shared with the format benchmark), reads it back through the
partitions as tasks do, checks zero-copy where the reader promises it, reader choice by
suffix and by magic bytes, and runs a virtual bright field + sum frame through the
engine against numpy.
"""

import os
import shutil
import struct

import h5py
import numpy as np
import pytest

import _reference as ref
from stem_explorer import masks
from stem_explorer.analyses import SumFrame, VirtualDetector, build_plan
from stem_explorer.engine import run_local
from stem_explorer.errors import DataSetError, FormatError
from stem_explorer.io import find_reader, open_dataset
from stem_explorer.io.synthetic import write_blockfile, write_zarr
from stem_explorer.io.ser import read_ser_header
from stem_explorer.io.testing import assert_reads_equal, assert_scan_positions, is_memory_mapped, make_frames, position_frames

NAV, SIG = (3, 5), (7, 4)  # non-square scan and detector


def check_engine(ds, data):
    """Virtual bright field and sum frame through the engine equal numpy's."""
    sig = ds.sig_shape
    bf = masks.Disk((sig[0] - 1) / 2, (sig[1] - 1) / 2, 2.0)
    plan, finalize = build_plan([VirtualDetector({"bf": bf}), SumFrame()], ds, tile_bytes=3 * ds.frame_bytes)
    parts = ds.partitions(2, target_bytes=4 * ds.frame_bytes)
    results = finalize(run_local(parts, plan), np.ones(ds.n_frames, bool))
    np.testing.assert_allclose(results["vd/bf"].data, ref.virtual_image(data, bf.rasterize(sig)), rtol=1e-5)
    np.testing.assert_allclose(results["sum/frame"].data, ref.frames(data).sum(axis=0), rtol=1e-5)


def check_dataset(ds, data, fmt, *, mapped):
    assert ds.format == fmt
    assert ds.shape == data.shape and ds.dtype == data.dtype
    assert_reads_equal(ds, data)
    with ds.source.open() as reader:
        assert is_memory_mapped(reader.read(0, ds.n_frames)) == mapped
    check_engine(ds, data)


def renamed(path, new_name):
    """A copy of ``path`` under a name whose suffix says nothing (for sniffing)."""
    target = os.path.join(os.path.dirname(path), new_name)
    shutil.copy(path, target)
    return target


def truncated(path, keep):
    target = str(path) + ".cut"
    with open(path, "rb") as f, open(target, "wb") as g:
        g.write(f.read(keep))
    return target


def assert_truncation_detected(path, fmt, *, head, tail):
    """Cut to ``head`` bytes (inside the header) and by ``tail`` bytes at the end:
    both are reported as truncated."""
    for keep in (head, os.path.getsize(path) - tail):
        with pytest.raises(FormatError, match="truncated"):
            open_dataset(truncated(path, keep), format=fmt)


# -- NanoMegas blockfile --------------------------------------------------------------------
def test_blockfile_roundtrip_sniff_and_metadata(tmp_path):
    data = make_frames(NAV, (6, 6), "uint8")  # blockfile detectors are square
    path = write_blockfile(tmp_path / "scan.blo", data)
    ds = open_dataset(path)
    check_dataset(ds, data, "blockfile", mapped=True)
    assert ds.metadata["beam_energy_V"] == 200000
    assert ds.metadata["scan_step_nm"] == [2.5, 1.5]
    assert ds.metadata["scan_rotation_deg"] == 15.0
    assert find_reader(renamed(path, "scan.xyz")).name == "blockfile"
    assert open_dataset(path, nav_shape=(15,)).nav_shape == (15,)


def test_blockfile_bad_input(tmp_path):
    data = make_frames((2, 3), (4, 4), "uint8")
    path = write_blockfile(tmp_path / "a.blo", data)
    assert_truncation_detected(path, "blockfile", head=40, tail=5)
    bad = tmp_path / "b.blo"
    bad.write_bytes(b"NOTBLO" + open(path, "rb").read()[6:])
    with pytest.raises(FormatError, match="not a NanoMegas blockfile"):
        open_dataset(bad)
    with pytest.raises(FormatError, match="header version 0x0203"):
        open_dataset(write_blockfile(tmp_path / "c.blo", data, version=0x0203))


# -- FEI TIA ser ----------------------------------------------------------------------------
SER_CODES = {"uint8": 1, "uint16": 2, "int32": 6, "float32": 7}


def write_ser(path, data, *, version=0x0220, gaps=False, valid=None, magic=0x0197, deltas=None, pixel=(0.5, 0.25)):
    """Following "TIA Series Data (ESD) file format" (FEI / Emispec, as reproduced by
    C. Boothroyd's "TIA format" page): header (byte order 'II', series id 0x0197,
    version, data type 0x4122, tag type, total / valid element counts, offset-array
    offset, dimension count), the dimension array (size, calibration offset, delta,
    element, description, units), the 2-D data elements (x then y calibration, type
    code, size x, size y, values with x fastest), the tags, then the data and tag
    offset arrays. The scan dimensions are listed fastest first (x, then y) and the
    elements stored x fastest, as ncempy.io.ser and HyperSpy read TIA area scans. TIA
    stores an image's rows bottom up: the readers of HyperSpy (rosettasciio) and
    ncempy (LiberTEM's) show the stored first row last, so a frame ``data[i]`` is
    written as ``data[i][::-1]`` (see test_ser_rows_as_hyperspy_and_libertem). An
    area scan gets time-and-position tags (0x4142: type, time, PositionX, PositionY)
    from its calibration, a line scan or series time tags (0x4152: type, time).
    ``gaps`` puts a varying number of padding bytes between elements (non-uniform
    offsets). ``deltas`` are the scan steps in metres (numpy order), ``pixel`` the
    elements' (y, x) calibration deltas."""
    nav, (sy, sx) = data.shape[:-2], data.shape[-2:]
    frames = data.reshape((-1, sy, sx))
    n = len(frames)
    word = "I" if version == 0x0210 else "Q"
    if deltas is None:  # of the numpy axes, slowest first
        deltas = [1e-9 * (i + 1) for i in range(len(nav))]
    dims = b""
    for size, delta in reversed(list(zip(nav, deltas))):  # the file lists x first
        desc, units = b"Position", b"meters"
        dims += struct.pack("<Iddi", size, 0.0, delta, 0)
        dims += struct.pack("<I", len(desc)) + desc + struct.pack("<I", len(units)) + units
    head_size = struct.calcsize(f"<HHHIIII{word}I")
    body, offsets, pos = b"", [], head_size + len(dims)
    for i, frame in enumerate(frames):
        pad = bytes(i % 3 * 8 + 1) if gaps else b""
        body += pad
        pos += len(pad)
        offsets.append(pos)
        element = struct.pack("<ddiddiHII", 0.0, pixel[1], 0, 0.0, pixel[0], 0, SER_CODES[frame.dtype.name], sx, sy)
        element += frame[::-1].tobytes()
        body += element
        pos += len(element)
    tag_type = 0x4142 if len(nav) == 2 else 0x4152
    tag_offsets = []
    for i in range(n):
        tag_offsets.append(pos)
        tag = struct.pack("<II", tag_type, 1000 + i)
        if tag_type == 0x4142:
            y, x = divmod(i, nav[1])
            tag += struct.pack("<dd", x * deltas[1], y * deltas[0])
        body += tag
        pos += len(tag)
    header = struct.pack(
        f"<HHHIIII{word}I", 0x4949, magic, version, 0x4122, tag_type, n,
        n if valid is None else valid, pos, len(nav),
    )
    table = np.array(offsets + tag_offsets, "<u4" if word == "I" else "<u8").tobytes()
    with open(path, "wb") as f:
        f.write(header + dims + body + table)
    return str(path)


def test_ser_rows_as_hyperspy_and_libertem(tmp_path):
    """TIA images are stored bottom row first; HyperSpy (``dc[..., ::-1, :]`` in
    rosettasciio's tia reader) and LiberTEM (ncempy's ``np.flipud`` in
    ``fileSER.getDataset``) agree on showing the stored first row at the bottom, on
    their own real TIA test files as on this one, so the frame's last row is the
    file's first."""
    stored = np.arange(12, dtype="uint16").reshape(4, 3)  # no symmetry: rows differ
    path = write_ser(tmp_path / "rows_1.ser", stored[::-1][None])  # the writer flips back
    with open(path, "rb") as f:  # the file's first stored row follows the element header
        f.seek(read_ser_element_offset(path) + struct.calcsize("<ddiddiHII"))
        assert np.frombuffer(f.read(6), "<u2").tolist() == [0, 1, 2]
    for gaps in (False, True):  # the mapped and the copying read paths
        if gaps:
            path = write_ser(tmp_path / "rows_gaps_1.ser", np.stack([stored[::-1]] * 2), gaps=True)
        ds = open_dataset(path)
        frame = ds.read_frames(0, 1)[0]
        assert frame[-1].tolist() == [0, 1, 2] and frame[0].tolist() == [9, 10, 11]
        assert ds.metadata["orientation"].startswith("rows flipped")
        with ds.source.open() as reader:  # the preview's gather flips too
            out = np.empty((1,) + ds.sig_shape, ds.dtype)
            reader.take(np.array([ds.n_frames - 1]), out)
            np.testing.assert_array_equal(out[0], frame)


def read_ser_element_offset(path) -> int:
    """Byte offset of the first data element (the first entry of the offset array)."""
    header = read_ser_header(path)
    width = 4 if header["version"] == 0x0210 else 8
    with open(path, "rb") as f:
        f.seek(header["offset_array_offset"])
        return int.from_bytes(f.read(width), "little")


def test_ser_scan_axis_order(tmp_path):
    """A non-square area scan (4 rows x 6 columns) of non-square frames (5 x 3): the
    dimension array lists x (6) then y (4), following the TIA series description with
    the axis order of ncempy.io.ser / HyperSpy (see write_ser); frame (y, x) comes back
    at scan position (y, x)."""
    nav, sig = (4, 6), (5, 3)
    path = write_ser(tmp_path / "scan_1.ser", position_frames(nav, sig))
    assert [d["size"] for d in read_ser_header(path)["dimensions"]] == [6, 4]
    ds = open_dataset(path)
    assert ds.sig_shape == sig
    assert_scan_positions(ds, nav)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("version", [0x0210, 0x0220])
def test_ser_uniform_is_mapped(tmp_path, dtype, version):
    data = make_frames(NAV, SIG, dtype)
    path = write_ser(tmp_path / "scan_1.ser", data, version=version)
    (tmp_path / "scan.emi").write_bytes(b"emi")
    ds = open_dataset(path)
    check_dataset(ds, data, "ser", mapped=False)  # mapped, then rows flipped into a buffer
    assert ds.metadata["read_path"].startswith("mmap")
    assert ds.metadata["pixel_size"] == [0.5, 0.25]
    assert ds.metadata["emi_file"].endswith("scan.emi")
    assert [c["delta"] for c in ds.metadata["scan_calibration"]] == [1e-9, 2e-9]
    assert find_reader(renamed(path, "scan.xyz")).name == "ser"


@pytest.mark.parametrize("dtype", ["uint16", "int32"])
def test_ser_non_uniform_offsets_copy_into_buffer(tmp_path, dtype):
    data = make_frames(NAV, SIG, dtype, seed=2)
    ds = open_dataset(write_ser(tmp_path / "gaps.ser", data, gaps=True))
    check_dataset(ds, data, "ser", mapped=False)
    assert ds.metadata["read_path"].startswith("copy")
    with ds.source.open() as reader:  # the buffer is reused between reads
        first = reader.read(0, 4)
        assert reader.read(4, 8).base is first.base


def test_ser_bad_input(tmp_path):
    data = make_frames((2, 3), (4, 4), "uint16")
    path = write_ser(tmp_path / "a.ser", data)
    assert_truncation_detected(path, "ser", head=20, tail=10)
    with pytest.raises(FormatError, match="not a TIA series"):
        open_dataset(write_ser(tmp_path / "b.ser", data, magic=0x0198))
    with pytest.raises(FormatError, match="version 0x0300"):
        open_dataset(write_ser(tmp_path / "c.ser", data, version=0x0300))
    stopped = write_ser(tmp_path / "d.ser", data, valid=4)  # 4 of 6 frames valid
    with pytest.raises(DataSetError, match="pass nav_shape"):
        open_dataset(stopped)
    assert open_dataset(stopped, nav_shape=(4,)).nav_shape == (4,)


# -- Gatan DM3 / DM4 ---------------------------------------------------------------------------
DM_TYPES = {"uint8": (6, 10), "uint16": (10, 4), "int32": (7, 3), "float32": (2, 6)}  # DataType, tag type


class DMWriter:
    """Following the DM3/DM4 tag-file descriptions (Boothroyd's DM3 notes, the DM4
    notes summarised by RosettaSciIO / openNCEM): big-endian header and tag
    structure, little-endian values; DM3 uses 4-byte counts, DM4 8-byte counts and a
    byte count after each tag name."""

    def __init__(self, version):
        self.version = version
        self.word = ">i" if version == 3 else ">Q"

    def words(self, *values):
        return b"".join(struct.pack(self.word, v) for v in values)

    def entry(self, kind, name, payload):
        name = name.encode()
        out = struct.pack(">BH", kind, len(name)) + name
        if self.version == 4:
            out += struct.pack(">Q", len(payload))
        return out + payload

    def group(self, entries):
        return b"\0\0" + self.words(len(entries)) + b"".join(entries)

    def data(self, info, value_bytes):
        return b"%%%%" + self.words(len(info), *info) + value_bytes

    def scalar(self, name, code, fmt, value):
        return self.entry(21, name, self.data([code], struct.pack("<" + fmt, value)))

    def file(self, root_entries, *, byte_order=1):
        root = self.group(root_entries)
        head = struct.pack(">i", self.version)
        head += struct.pack(">I" if self.version == 3 else ">Q", len(root))
        return head + struct.pack(">i", byte_order) + root + bytes(8)


def write_dm(path, data, *, version=4, extra_stack=False, layout="nav-major", units=None, microscope=None):
    """4-D ``data`` (scan y, scan x, detector y, detector x) is written in ``layout``:
    "nav-major" as GMS 3.x STEMx does with C ordering (Dimensions detector x, detector
    y, scan x, scan y; frames contiguous; ``ImageTags/Meta Data/Data Order Swapped``
    = 1), "sig-major" as older GMS (Dimensions scan x, scan y, detector x, detector y;
    each detector pixel's scan image contiguous; no such tag). Dimensions list the
    fastest axis first, so the stored C-ordered array's shape is their reverse.
    ``units`` (one per Dimensions entry, fastest first) adds ``Units`` to the
    calibrations (scales 0.1, 0.2... in that order); ``microscope`` ({name: float})
    goes to ``ImageTags/Microscope Info``."""
    w = DMWriter(version)
    code, tag_type = DM_TYPES[data.dtype.name]

    def text(name, value):  # DM strings in tags: arrays of uint16 characters
        return w.entry(21, name, w.data([20, 4, len(value)], value.encode("utf-16-le")))

    def image(name, array):
        meta = []
        if array.ndim == 4:
            meta = [text("Format", "Diffraction image")]
            if layout == "nav-major":
                meta.append(w.scalar("Data Order Swapped", 8, "B", 1))
            else:
                array = array.transpose(2, 3, 0, 1)
        dims = [w.scalar("", 5, "I", n) for n in reversed(array.shape)]
        calib = [w.entry(20, "", w.group([w.scalar("Scale", 6, "f", 0.1 * (i + 1)), w.scalar("Origin", 6, "f", 0.0)]
                                          + ([text("Units", units[i])] if units and array.ndim == len(units) else [])))
                 for i in range(array.ndim)]
        values = w.data([20, tag_type, array.size], np.ascontiguousarray(array, "<" + array.dtype.str[1:]).tobytes())
        image_data = w.group([
            w.entry(20, "Calibrations", w.group([w.entry(20, "Dimension", w.group(calib))])),
            w.entry(21, "Data", values),
            w.scalar("DataType", 3, "i", code),
            w.entry(20, "Dimensions", w.group(dims)),
            w.scalar("PixelDepth", 3, "i", array.dtype.itemsize),
        ])
        return w.entry(20, name, w.group([
            w.entry(21, "Name", w.data([18, 3], "img".encode("utf-16-le"))),
            w.entry(21, "Rect", w.data([15, 0, 2, 0, 3, 0, 3], struct.pack("<ii", 1, 2))),
            w.entry(20, "ImageData", image_data),
            w.entry(20, "ImageTags", w.group([
                w.entry(20, "Meta Data", w.group(meta)),
                w.entry(20, "Microscope Info", w.group([w.scalar(k, 7, "d", v) for k, v in (microscope or {}).items()])),
            ])),
        ]))

    thumbnail = np.arange(12, dtype=data.dtype).reshape(3, 4)
    images = [image("", thumbnail), image("", data)]
    if extra_stack:
        images.append(image("", data[:1]))
    units = w.data([20, 15, 0, 2, 0, 3, 0, 6, 2], struct.pack("<ifif", 1, 0.5, 2, 1.5))  # array of structs
    root = [
        w.scalar("ApplicationBounds", 3, "i", 7),
        w.entry(21, "Pairs", units),
        w.entry(20, "ImageList", w.group(images)),
    ]
    with open(path, "wb") as f:
        f.write(w.file(root))
    return str(path)


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_dm_4d_and_3d(tmp_path, version, dtype):
    data = make_frames(NAV, SIG, dtype)
    path = write_dm(tmp_path / f"scan.dm{version}", data, version=version)
    ds = open_dataset(path)
    check_dataset(ds, data, "dm", mapped=True)
    assert ds.metadata["dimensions"] == [4, 7, 5, 3] and ds.metadata["dm_version"] == version
    assert [c["scale"] for c in ds.metadata["calibrations"]] == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert find_reader(renamed(path, "scan.img")).name == "dm"
    stack = make_frames((6,), SIG, dtype)
    check_dataset(open_dataset(write_dm(tmp_path / "stack.dm4", stack, version=version)), stack, "dm", mapped=True)


@pytest.mark.parametrize("version", [3, 4])
@pytest.mark.parametrize("layout", ["nav-major", "sig-major"])
def test_dm_scan_axis_order(tmp_path, version, layout):
    """A non-square scan (4 rows x 6 columns) of non-square frames (5 x 3), in both
    4-D layouts of DigitalMicrograph (see write_dm: the DM3/DM4 tag structure of
    Boothroyd's notes and the Gatan DM4 description; Dimensions fastest first; the
    layout from ``Data Order Swapped`` as LiberTEM's DM reader documents and openNCEM
    issue 17 describes): frame (y, x) comes back at scan position (y, x)."""
    nav, sig = (4, 6), (5, 3)
    path = write_dm(tmp_path / f"scan.dm{version}", position_frames(nav, sig), version=version, layout=layout)
    ds = open_dataset(path)
    assert ds.sig_shape == sig and ds.metadata["layout"] == layout
    assert ds.metadata["dimensions"] == ([3, 5, 6, 4] if layout == "nav-major" else [6, 4, 3, 5])
    assert_scan_positions(ds, nav)
    assert ds.metadata["read_path"] == ("mmap" if layout == "nav-major" else "gather (sig-major layout, copy)")
    # calibrations follow the data set's axes (Dimension i has scale 0.1 (i + 1))
    scales = [c["scale"] for c in ds.metadata["calibrations"]]
    assert scales == pytest.approx([0.4, 0.3, 0.2, 0.1] if layout == "nav-major" else [0.2, 0.1, 0.4, 0.3])
    check_engine(ds, position_frames(nav, sig))
    other = "sig-major" if layout == "nav-major" else "nav-major"
    assert open_dataset(path, layout=other).shape != ds.shape  # the override is obeyed


def test_dm_bad_input(tmp_path):
    data = make_frames((2, 3), (4, 4), "uint8")
    path = write_dm(tmp_path / "a.dm3", data, version=3)
    assert_truncation_detected(path, "dm", head=200, tail=30)
    wrong = tmp_path / "b.dm3"
    wrong.write_bytes(struct.pack(">i", 5) + open(path, "rb").read()[4:])
    with pytest.raises(FormatError, match="version field is 5"):
        open_dataset(wrong)
    with pytest.raises(DataSetError, match="several 3-D/4-D images"):
        open_dataset(write_dm(tmp_path / "c.dm4", data, extra_stack=True))
    assert open_dataset(tmp_path / "c.dm4", image=1).shape == data.shape


# -- EMPAD ---------------------------------------------------------------------------------------
def write_empad(folder, data, *, rows=130, xml_name="acquisition.xml", raw_name="scan_x5_y3.raw", mode_attr=True):
    """Following the EMPAD description (RosettaSciIO / LiberTEM docs): each record is
    130 rows of 128 float32 values, the last two rows metadata; the xml's root
    ``<root>`` names the raw file and gives the scan in
    ``<scan_parameters mode="acquire">`` (a "search" block precedes it)."""
    n, (sy, sx) = int(np.prod(data.shape[:-2])), data.shape[-2:]
    records = np.full((n, rows, sx), 7, data.dtype)
    records[:, :sy] = data.reshape(n, sy, sx)
    records.tofile(os.path.join(folder, raw_name))
    ny, nx = data.shape[:2]
    mode = ' mode="acquire"' if mode_attr else ""
    xml = (
        f'<?xml version="1.0"?><root><raw_file filename="C:\\data\\{raw_name}"/>'
        '<scan_parameters mode="search"><scan_resolution_x>1</scan_resolution_x>'
        '<scan_resolution_y>1</scan_resolution_y></scan_parameters>'
        f'<scan_parameters{mode}><scan_resolution_x>{nx}</scan_resolution_x>'
        f'<scan_resolution_y>{ny}</scan_resolution_y></scan_parameters></root>'
    )
    with open(os.path.join(folder, xml_name), "w") as f:
        f.write(xml)
    return os.path.join(folder, xml_name), os.path.join(folder, raw_name)


def test_empad_xml_and_raw(tmp_path):
    data = make_frames(NAV, (128, 128), "<f4")
    xml, raw = write_empad(tmp_path, data)
    for path in (xml, raw):
        assert find_reader(path).name == "empad"
        ds = open_dataset(path)
        check_dataset(ds, data, "empad", mapped=True)
        assert ds.metadata["scan_shape_source"] == "xml" and ds.metadata["metadata_rows_skipped"] == 2


def test_empad_other_layouts_by_option(tmp_path):
    data = make_frames(NAV, SIG, "uint16")
    _xml, raw = write_empad(tmp_path, data, rows=9)
    ds = open_dataset(raw, sig_shape=SIG, frame_rows=9, dtype="uint16")
    check_dataset(ds, data, "empad", mapped=True)


def test_plain_raw_stays_raw_and_empad_errors(tmp_path):
    plain = tmp_path / "plain.raw"
    make_frames((2,), (4, 4), "uint8").tofile(plain)
    (tmp_path / "other.xml").write_text("<root><something/></root>")
    assert find_reader(str(plain)).name == "raw"
    data = make_frames((2, 2), (128, 128), "<f4")
    xml, raw = write_empad(tmp_path, data, xml_name="scan.xml", raw_name="scan.raw")
    assert find_reader(str(plain)).name == "raw"  # the xml names another file
    with open(raw, "ab") as f:
        f.write(b"\0" * 100)
    with pytest.raises(FormatError, match="left over"):
        open_dataset(xml)
    assert open_dataset(xml, allow_trailing=True).shape == data.shape
    os.remove(raw)
    with pytest.raises(DataSetError, match="does not exist"):
        open_dataset(xml)
    with pytest.raises(FormatError, match="not an EMPAD xml"):
        open_dataset(tmp_path / "other.xml", format="empad")


# -- zarr ------------------------------------------------------------------------------------
try:
    import zarr
except ImportError:  # the optional zarr extra
    zarr = None
needs_zarr = pytest.mark.skipif(zarr is None, reason="zarr is not installed: pip install 'stem_explorer[zarr]'")


def _codecs(zarr_format):
    import numcodecs

    if zarr_format == 2:
        return [numcodecs.Blosc(cname="zstd", shuffle=2), numcodecs.Zlib(level=3)]
    from zarr.codecs import BloscCodec, ZstdCodec

    return [BloscCodec(cname="lz4"), ZstdCodec(level=3)]


@needs_zarr
@pytest.mark.parametrize("zarr_format", [2, 3])
@pytest.mark.parametrize("dtype", ["uint16", ">u2", "float32"])
@pytest.mark.parametrize("chunks", [(1, 5, 7, 4), (2, 3, 4, 4), (2, 3, 7, 4)])
def test_zarr_roundtrip(tmp_path, zarr_format, dtype, chunks):
    data = make_frames(NAV, SIG, dtype)
    codec = _codecs(zarr_format)[chunks[0] - 1]
    path = write_zarr(tmp_path / "scan.zarr", data, zarr_format=zarr_format, chunks=chunks, codec=codec)
    ds = open_dataset(path)
    # v3 keeps the byte order in its "bytes" codec and hands back native values
    expected = data if zarr_format == 2 else data.astype(data.dtype.newbyteorder("="))
    check_dataset(ds, expected, "zarr", mapped=False)
    assert ds.metadata["array"] == "entry/frames" and ds.metadata["zarr_format"] == zarr_format
    # whole-frame chunks (edge chunks past the scan included) are read from their files
    assert ds.metadata["read_path"] == ("chunk files" if chunks[2:] == SIG else "zarr")
    assert ds.source.frame_alignment == (5 if chunks[0] == 1 else 10)
    assert all(p.start % ds.source.frame_alignment == 0 for p in ds.partitions(2, target_bytes=1))
    assert find_reader(renamed_dir(path, "scan.store")).name == "zarr"


@needs_zarr
@pytest.mark.parametrize("zarr_format,keys", [(2, "/"), (3, "."), (3, "v2")])
def test_zarr_chunk_files_missing_chunks_and_key_encodings(tmp_path, zarr_format, keys):
    """Chunk files read directly agree with the zarr package: nested or dotted chunk
    keys, v3 "v2" keys, and chunks never written (the fill value), 3-D stacks too."""
    data = make_frames((11,), SIG, "uint16")
    options = {"fill_value": 9}
    if zarr_format == 2:
        options["chunk_key_encoding"] = {"name": "v2", "separator": keys}
    elif keys == "v2":
        options["chunk_key_encoding"] = {"name": "v2", "separator": "."}
    else:
        options["chunk_key_encoding"] = {"name": "default", "separator": keys}
    arr = zarr.create_array(str(tmp_path / "s.zarr"), shape=data.shape, chunks=(3,) + SIG, dtype="u2",
                            zarr_format=zarr_format, **options)
    arr[:3] = data[:3]
    arr[9:] = data[9:]  # chunks 1 and 2 never written
    ds = open_dataset(tmp_path / "s.zarr")
    assert ds.metadata["read_path"] == "chunk files"
    expected = arr[...]
    assert (expected[3:9] == 9).all()
    assert_reads_equal(ds, expected)


def renamed_dir(path, name):
    target = os.path.join(os.path.dirname(path), name)
    shutil.copytree(path, target)
    return target


@needs_zarr
def test_zarr_3d_array_store_and_errors(tmp_path):
    data = make_frames((6,), SIG, "uint8")
    arr = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=data.shape, chunks=(4, 7, 4), dtype="u1", zarr_format=3)
    arr[...] = data
    check_dataset(open_dataset(tmp_path / "a.zarr"), data, "zarr", mapped=False)
    group = zarr.open_group(str(tmp_path / "b.zarr"), mode="w")
    group.create_array("one", shape=(2, 3, 4), dtype="u1")
    group.create_array("two", shape=(2, 3, 4), dtype="u1")
    with pytest.raises(DataSetError, match="several 3-D/4-D arrays"):
        open_dataset(tmp_path / "b.zarr")
    assert open_dataset(tmp_path / "b.zarr", array="two").shape == (2, 3, 4)
    with pytest.raises(DataSetError, match="'three' does not exist"):
        open_dataset(tmp_path / "b.zarr", array="three")
    (tmp_path / "c.zarr").mkdir()
    (tmp_path / "c.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(FormatError, match="cannot be opened"):
        open_dataset(tmp_path / "c.zarr")


# -- HDF5 layouts of other writers ---------------------------------------------------------------
def write_hspy(path, data, *, axes=None, tem=None):
    """HyperSpy's hspy layout: /Experiments/<title>/data in numpy order (navigation
    axes first), axis descriptions as attributes of axis-<i> groups (``axes``: one
    (scale, units) per axis), metadata groups (``tem``: Acquisition_instrument/TEM
    attributes)."""
    with h5py.File(path, "w") as f:
        f.attrs.update({"file_format": "HyperSpy", "file_format_version": "3.1"})
        exp = f.create_group("Experiments/my scan")
        exp.create_dataset("data", data=data)
        for i, n in enumerate(data.shape):
            attrs = {"size": n, "navigate": i < 2}
            if axes:
                attrs.update(scale=axes[i][0], units=axes[i][1], offset=0.0)
            exp.create_group(f"axis-{i}").attrs.update(attrs)
        exp.create_group("metadata/Signal").attrs["signal_type"] = "electron_diffraction"
        if tem:
            exp.create_group("metadata/Acquisition_instrument/TEM").attrs.update(tem)
        exp.create_dataset("learning_results/factors", data=np.zeros((4, 3, 2)))


def write_py4dstem(path, data, *, dims=None):
    """py4DSTEM 0.x / EMD 1.0: groups tagged with emd_group_type, the datacube's
    data (R_Nx, R_Ny, Q_Nx, Q_Ny) with dim1..dim4 beside it (``dims``: one (step,
    units) per axis, written as emdfile writes a linear dim: its first two values),
    plus a 3-D stack."""
    with h5py.File(path, "w") as f:
        f.attrs.update({"emd_group_type": "file", "version_major": 1})
        cube = f.create_group("4DSTEM_experiment/data/datacubes/datacube_0")
        cube.attrs["emd_group_type"] = 1
        cube.create_dataset("data", data=data)
        for i, n in enumerate(data.shape):
            if dims:
                dim = cube.create_dataset(f"dim{i + 1}", data=[0.0, dims[i][0]])
                dim.attrs.update(name=f"axis{i}", units=dims[i][1])
            else:
                cube.create_dataset(f"dim{i + 1}", data=np.arange(n, dtype="f8"))
        stack = f.create_group("4DSTEM_experiment/data/pointlistarrays/stack")
        stack.create_dataset("values", data=np.zeros((3, 4, 5)))


def write_prismatic(path, data):
    """Prismatic EMD output: 4DSTEM_simulation/data/datacubes/CBED_array_depth0000
    (emd_group_type 1) beside realslices of annular-detector images (3-D)."""
    with h5py.File(path, "w") as f:
        sim = f.create_group("4DSTEM_simulation/data")
        cube = sim.create_group("datacubes/CBED_array_depth0000")
        cube.attrs["emd_group_type"] = 1
        cube.create_dataset("data", data=data)
        real = sim.create_group("realslices/annular_detector_depth0000")
        real.attrs["emd_group_type"] = 1
        real.create_dataset("data", data=np.zeros(data.shape[:2] + (6,), "f4"))


def write_fpd(path, data):
    """fpd (fast pixelated detector) HDF5: fpd_expt/fpd_data/data as (scan_y, scan_x,
    det_y, det_x), sum images and per-position (y, x, 1) exposure/threshold data."""
    with h5py.File(path, "w") as f:
        expt = f.create_group("fpd_expt")
        expt.create_dataset("fpd_data/data", data=data, chunks=(1, 2) + data.shape[2:])
        expt.create_dataset("fpd_sum_im/data", data=data.sum(axis=(2, 3)))
        expt.create_dataset("fpd_sum_dif/data", data=data.sum(axis=(0, 1)))
        for name in ("Exposure", "Threshold"):
            expt.create_dataset(f"{name}/data", data=np.ones(data.shape[:2] + (1,)))


LAYOUTS = {
    "hspy": (write_hspy, "/Experiments/my scan/data", ".hspy"),
    "py4dstem": (write_py4dstem, "/4DSTEM_experiment/data/datacubes/datacube_0/data", ".h5"),
    "prismatic": (write_prismatic, "/4DSTEM_simulation/data/datacubes/CBED_array_depth0000/data", ".emd"),
    "fpd": (write_fpd, "/fpd_expt/fpd_data/data", ".hdf5"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_hdf5_layouts_autopick(tmp_path, layout, dtype):
    write, dataset, suffix = LAYOUTS[layout]
    data = make_frames(NAV, SIG, dtype)
    path = tmp_path / f"file{suffix}"
    write(path, data)
    ds = open_dataset(path)
    assert ds.metadata["dataset"] == dataset
    check_dataset(ds, data, "hdf5", mapped=layout != "fpd")


def write_fpd5(path, data, *, chunked=True):
    """fpd's 5-D form of ``data`` ``(scan_y, scan_x, channels, det_y, det_x)``: one frame
    per Merlin colour channel (counter) at each position; Exposure/Threshold and the
    sum image carry the channel axis last, as fpd writes them."""
    with h5py.File(path, "w") as f:
        expt = f.create_group("fpd_expt")
        chunks = (1, 2, 1) + data.shape[3:] if chunked else None
        expt.create_dataset("fpd_data/data", data=data, chunks=chunks)
        expt.create_dataset("fpd_sum_im/data", data=np.moveaxis(data.sum(axis=(3, 4)), 2, -1))
        for name in ("Exposure", "Threshold"):
            expt.create_dataset(f"{name}/data", data=np.ones(data.shape[:3]))


@pytest.mark.parametrize("chunked", [True, False])
def test_fpd_five_dimensional_singleton_is_squeezed(tmp_path, chunked):
    data = make_frames(NAV, SIG, "uint16")
    path = tmp_path / "fpd5.hdf5"
    write_fpd5(path, data[:, :, None], chunked=chunked)
    ds = open_dataset(path)
    assert ds.metadata["dataset"] == "/fpd_expt/fpd_data/data"
    assert ds.metadata["hdf5_shape"] == [*NAV, 1, *SIG]
    assert ds.metadata["channel"] == 0
    check_dataset(ds, data, "hdf5", mapped=not chunked)


@pytest.mark.parametrize("chunked", [True, False])
def test_fpd_several_frames_per_position(tmp_path, chunked):
    """Two colour channels per position: refused with both ways out, then read as the
    user picks: one channel, or every frame along a longer scan axis."""
    data = make_frames(NAV + (2,), SIG, "uint16", seed=4)
    path = tmp_path / "colour.hdf5"
    write_fpd5(path, data, chunked=chunked)
    with pytest.raises(DataSetError) as info:
        open_dataset(path)
    message = str(info.value)
    assert "2 frames per scan position" in message and str(path) in message
    assert "channel=0" in message and f"nav_shape=({NAV[0]}, {NAV[1] * 2})" in message
    for channel in (0, 1):
        ds = open_dataset(path, channel=channel)
        assert ds.metadata["channel"] == channel
        check_dataset(ds, np.ascontiguousarray(data[:, :, channel]), "hdf5", mapped=not chunked)
    ds = open_dataset(path, nav_shape=(NAV[0], NAV[1] * 2))
    assert ds.metadata["channel"] is None
    check_dataset(ds, data.reshape((NAV[0], NAV[1] * 2) + SIG), "hdf5", mapped=not chunked)
    with pytest.raises(DataSetError, match="channel=2 is outside 0..1"):
        open_dataset(path, channel=2)


def test_channel_is_only_for_five_dimensional_data(tmp_path):
    path = tmp_path / "four.h5"
    write_fpd(path, make_frames(NAV, SIG, "uint16"))
    with pytest.raises(DataSetError, match="channel=.*5-D"):
        open_dataset(path, channel=0)


# -- rosettasciio fallback ---------------------------------------------------------------------
def test_rsciio_missing_is_a_clear_error(tmp_path):
    try:
        import rsciio  # noqa: F401

        pytest.skip("rsciio is installed here")
    except ImportError:
        pass
    path = write_blockfile(tmp_path / "x.blo", make_frames((1, 2), (4, 4), "uint8"))
    with pytest.raises(FormatError, match=r"stem_explorer\[rsciio\].*GPL"):
        open_dataset(path, format="rsciio")
    assert find_reader(path).name == "blockfile"  # never picked by suffix


def test_cli_info_takes_the_channel(tmp_path, capsys):
    import json

    from stem_explorer.cli import main

    path = tmp_path / "colour.hdf5"
    write_fpd5(path, make_frames(NAV + (3,), SIG, "uint16"))
    assert main(["info", str(path), "--channel", "2", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["nav_shape"] == list(NAV) and info["metadata"]["channel"] == 2

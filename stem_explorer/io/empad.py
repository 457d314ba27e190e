"""EMPAD (Electron Microscope Pixel Array Detector) ``.raw`` + ``.xml`` acquisitions.

Layout, after the EMPAD format notes of RosettaSciIO and LiberTEM's documentation:
the ``.raw`` file holds one record per scan position, each ``130`` rows of ``128``
little-endian ``float32`` values; the last two rows of each record are metadata, so
a frame is ``128 x 128`` and the records follow back to back (frame stride = 130
rows). The ``.xml`` file (root element ``<root>``) names the raw file in
``<raw_file filename="..."/>`` and gives the scan in
``<scan_parameters mode="acquire">`` as ``<scan_resolution_x>`` and
``<scan_resolution_y>`` (older files: ``<pix_x>`` / ``<pix_y>``).

Open either file. A ``.raw`` whose sibling ``.xml`` is an EMPAD xml naming it is
picked as EMPAD; any other ``.raw`` stays with the generic ``raw`` reader.
"""

from __future__ import annotations

import glob
import math
import os
import xml.etree.ElementTree as ET
from typing import Optional


from ..errors import DataSetError, DataSetNotFoundError, FormatError
from .base import DataSet
from .raw import MappedFrameSource, check_file_size, parse_dtype, parse_shape
from .registry import ReaderPlugin, register_reader

__all__ = ["EMPAD_FRAME_ROWS", "EMPAD_SIG_SHAPE", "find_empad_xml", "is_empad", "open_empad", "read_empad_xml"]

#: detector pixels of a frame
EMPAD_SIG_SHAPE = (128, 128)
#: rows stored per frame record: the frame plus two rows of metadata
EMPAD_FRAME_ROWS = 130
_XML_PEEK = 1 << 20  # EMPAD xml files are a few kB; never parse a huge file to sniff


def _parse_xml(path: str) -> Optional[ET.Element]:
    """The root of ``path`` when it is an EMPAD xml (a ``<root>`` with ``raw_file``)."""
    try:
        if os.path.getsize(path) > _XML_PEEK:
            return None
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    if root.tag != "root" or root.find("raw_file") is None:
        return None
    return root


def _raw_name(root: ET.Element) -> str:
    # the xml may hold the acquisition machine's full path, Windows separators included
    return root.find("raw_file").get("filename", "").replace("\\", "/").rsplit("/", 1)[-1]


def find_empad_xml(raw_path) -> Optional[str]:
    """The EMPAD xml beside ``raw_path`` that names it (same stem first), or None."""
    raw_path = os.path.abspath(os.fspath(raw_path))
    folder, name = os.path.split(raw_path)
    same_stem = os.path.splitext(raw_path)[0] + ".xml"
    others = sorted(glob.glob(os.path.join(glob.escape(folder), "*.xml")))
    for xml in [same_stem] + [x for x in others if x != same_stem]:
        root = _parse_xml(xml) if os.path.isfile(xml) else None
        if root is not None and _raw_name(root) == name:
            return xml
    return None


def is_empad(path) -> bool:
    """True for an EMPAD xml, or a ``.raw`` file with an EMPAD xml beside it."""
    path = os.fspath(path)
    if path.lower().endswith(".xml"):
        return _parse_xml(path) is not None
    return os.path.isfile(path) and find_empad_xml(path) is not None


def read_empad_xml(xml_path) -> dict:
    """``raw_file`` (path beside the xml) and ``nav_shape`` (or None) from an EMPAD xml."""
    xml_path = os.fspath(xml_path)
    if not os.path.isfile(xml_path):
        raise DataSetNotFoundError(f"file {xml_path!r} does not exist; check the path")
    root = _parse_xml(xml_path)
    if root is None:
        raise FormatError(
            f"{xml_path!r} is not an EMPAD xml (no <root> element with a <raw_file>); "
            f"pass the EMPAD acquisition's xml or its .raw file"
        )
    name = _raw_name(root)
    if not name:
        raise FormatError(f"EMPAD xml {xml_path!r} names no raw file in <raw_file filename=...>")
    return {
        "raw_file": os.path.join(os.path.dirname(os.path.abspath(xml_path)), name),
        "nav_shape": _scan_from_xml(root),
    }


def _scan_from_xml(root: ET.Element) -> Optional[tuple[int, int]]:
    blocks = root.findall(".//scan_parameters")
    acquire = [b for b in blocks if b.get("mode") == "acquire"] or blocks
    for block, names in [(b, ("scan_resolution_y", "scan_resolution_x")) for b in acquire] + [
        (root, (".//pix_y", ".//pix_x"))
    ]:
        texts = [block.findtext(n) for n in names]
        if all(t and t.strip().isdigit() for t in texts):
            return tuple(int(t) for t in texts)
    return None


def open_empad(
    path,
    *,
    nav_shape=None,
    sig_shape=EMPAD_SIG_SHAPE,
    frame_rows: int = EMPAD_FRAME_ROWS,
    dtype="<f4",
    allow_trailing: bool = False,
) -> DataSet:
    """Open an EMPAD acquisition from its ``.xml`` or its ``.raw`` file.

    The scan shape comes from the xml (``nav_shape`` overrides it, and is required
    when the xml gives none). Each stored record is ``frame_rows`` rows of
    ``sig_shape[1]`` values, of which the first ``sig_shape[0]`` rows are the frame:
    frames are zero-copy views of a memory map, skipping the metadata rows. The raw
    file must hold exactly the scan's records, or more with ``allow_trailing=True``.
    """
    path = os.fspath(path)
    if path.lower().endswith(".xml"):
        info, xml_path = read_empad_xml(path), path
    else:
        xml_path = find_empad_xml(path)
        info = read_empad_xml(xml_path) if xml_path else {"raw_file": path, "nav_shape": None}
    raw = info["raw_file"]
    if not os.path.isfile(raw):
        raise DataSetNotFoundError(
            f"EMPAD raw file {raw!r} named by {xml_path!r} does not exist; keep the .raw "
            f"beside its .xml under the name the xml gives"
        )
    sig = parse_shape("sig_shape", sig_shape, (2,))
    dtype = parse_dtype(dtype)
    if int(frame_rows) < sig[0]:
        raise DataSetError(f"frame_rows={frame_rows} is fewer than the frame's {sig[0]} rows")
    stride = int(frame_rows) * sig[1] * dtype.itemsize
    nav = nav_shape if nav_shape is not None else info["nav_shape"]
    if nav is None:
        raise DataSetError(
            f"the scan shape of {raw!r} is unknown (no EMPAD xml with scan_resolution_x/y "
            f"beside it); pass nav_shape=(scan_y, scan_x)"
        )
    nav = parse_shape("nav_shape", nav, (1, 2))
    n_frames = math.prod(nav)
    check_file_size(
        raw,
        n_frames * stride,
        layout=f"an EMPAD scan {nav} of {frame_rows}x{sig[1]} {dtype.name} records",
        allow_trailing=allow_trailing,
    )
    source = MappedFrameSource(raw, offset=0, n_frames=n_frames, sig_shape=sig, dtype=dtype, frame_stride=stride)
    metadata = {
        "xml_file": xml_path,
        "raw_file": raw,
        "scan_shape_source": "xml" if nav_shape is None else "nav_shape option",
        "metadata_rows_skipped": int(frame_rows) - sig[0],
        "read_path": "mmap",
    }
    return DataSet(source, nav, format="empad", path=path, metadata=metadata)


PLUGIN = register_reader(
    ReaderPlugin(
        name="empad",
        open=open_empad,
        suffixes=(".xml", ".raw"),
        sniff=is_empad,
        description="EMPAD .raw + .xml (128x128 float32 frames, 2 metadata rows skipped)",
    ),
    replace=True,
)

"""MRC stacks (``.mrc``, ``.mrcs``) and Direct Electron 4D-STEM movies.

The 1024-byte MRC header (MRC2014; read with the ``mrcfile`` package) gives the frame
size ``nx`` x ``ny``, the frame count ``nz``, the mode (dtype, byte order from the
machine stamp) and the extended header size ``nsymbt``; the frames follow at byte
``1024 + nsymbt``, back to back, and are mapped zero-copy with
:class:`~stem_explorer.io.raw.MappedFrameSource`. A plain MRC file is a stack:
``nav_shape=(nz,)``.

Direct Electron (DE-Server) writes ``<prefix>_movie.mrc`` with ``<prefix>_info.txt``
(``Key = value`` lines) beside it; when that file is there it gives the scan:

* a raster scan (``Scan - Type = Raster``; with ``Scan - ROI Enable`` the ROI size)
  becomes ``nav_shape=(Scan - Size Y, Scan - Size X)``;
* custom and random scans (``XY File``, ``Random``) list their positions in
  ``<prefix>_scan_coordinates.csv`` (one ``x,y`` line per point, in acquisition
  order): the nav is 1-D, one entry per frame, and
  ``metadata["scan_coordinates"]`` holds the ``[y, x]`` scan pixel of every frame;
* repeated frames per point or repeated scans, and disabled scanning, give a 1-D nav
  of all frames (the repetition is recorded in the metadata).

``nav_shape=`` overrides all of it.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional

import mrcfile
import numpy as np

from ..errors import DataSetNotFoundError, FormatError
from .base import DataSet
from .calibration import Calibration, file_calibration
from .raw import MappedFrameSource, check_file_size, nav_shape_hint, parse_shape
from .registry import ReaderPlugin, register_reader

__all__ = ["de_calibration", "de_frame_count", "de_info_name", "de_scan", "de_side_file", "describe_de_movie", "is_mrc", "mrc_layout",
           "open_mrc", "read_de_info", "read_scan_coordinates"]

_HEADER_BYTES = 1024
_MAP_OFFSET = 208  # the "MAP " signature of MRC2014 headers


def is_mrc(path) -> bool:
    """True when ``path`` carries the MRC2014 ``MAP`` signature."""
    try:
        with open(path, "rb") as f:
            f.seek(_MAP_OFFSET)
            return f.read(4) == b"MAP "
    except OSError:
        return False


# -- Direct Electron side files ------------------------------------------------------------
def read_de_info(path: str) -> dict:
    """The ``Key = value`` lines of a DE ``_info.txt`` as a dict of strings."""
    info = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            key, sep, value = line.partition("=")
            if sep:
                info[key.strip()] = value.strip()
    return info


def read_scan_coordinates(path: str) -> np.ndarray:
    """Scan positions of a DE ``_scan_coordinates.csv`` as an ``(n, 2)`` int array of
    ``[y, x]`` (the file lists ``x,y``); lines that are not two numbers are skipped."""
    points = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.replace(";", ",").split(",")
            try:
                x, y = (float(p) for p in parts[:2])
            except ValueError:
                continue
            points.append((y, x))
    coords = np.asarray(points, float).reshape(-1, 2)
    return coords.astype(np.int64) if np.all(coords == np.round(coords)) else coords


def _int(info: dict, key: str, default: int) -> int:
    try:
        return int(float(info[key]))
    except (KeyError, ValueError, OverflowError):  # missing, not a number, infinite
        return default


def _is_raster(info: dict) -> bool:
    roi = info.get("Scan - ROI Enable", "Disable") == "Enable"
    kinds = [info.get("Scan - Type", "Raster")] + ([info.get("Scan - ROI Type", "Raster")] if roi else [])
    return all(kind == "Raster" for kind in kinds)


def _repetition(info: dict) -> tuple[int, int]:
    """Frames per scan point and scan repeats."""
    per_point = max(1, _int(info, "Scan - Camera Frames Per Point", _int(info, "Scan - Point Repeat", 1)))
    return per_point, max(1, _int(info, "Scan - Repeats", 1))


def _raster_prefix(info: dict) -> str:
    """The keys' prefix of the raster's size: the ROI's when enabled."""
    return "Scan - ROI Size" if info.get("Scan - ROI Enable") == "Enable" else "Scan - Size"


def de_frame_count(info: dict, coordinates: Optional[np.ndarray]) -> Optional[int]:
    """The frames the DE ``_info.txt`` (``info``) announces for the whole acquisition:
    scan points (the raster's, or the ``coordinates`` of a custom or random scan) x
    frames per point x repeats; None when it does not say (scanning disabled, a
    non-raster scan without coordinates). :func:`de_scan` of that many frames gives the
    scan the offline reader gives the complete movie."""
    if info.get("Scan - Enable", "Enable") != "Enable":
        return None
    per_point, repeats = _repetition(info)
    if _is_raster(info):
        prefix = _raster_prefix(info)
        points = _int(info, f"{prefix} Y", 0) * _int(info, f"{prefix} X", 0)
    elif coordinates is not None:
        points = len(coordinates)
    else:
        return None
    return points * per_point * repeats if points > 0 else None


def de_scan(info: dict, n_frames: int, coordinates: Optional[np.ndarray], where: str):
    """``(nav_shape, metadata)`` of a DE movie of ``n_frames`` frames from its
    ``_info.txt`` (``info``) and scan coordinates (``[y, x]`` rows, or None).

    Sizes from the info file are checked against ``n_frames`` (which the movie's file
    size bounds) before anything is built from them: memory stays proportional to the
    frames, whatever the info file says."""
    meta = {"scan_type": info.get("Scan - Type")}
    if info.get("Scan - Enable", "Enable") != "Enable":
        meta["scan_shape_source"] = "frame count (stack): the _info.txt says scanning disabled"
        return (n_frames,), meta
    per_point, repeats = _repetition(info)
    if per_point * repeats > 1:
        meta.update(frames_per_point=per_point, scan_repeats=repeats)
    if per_point > n_frames:
        raise FormatError(
            f"{where} holds {n_frames} frames but its _info.txt says {per_point} frames per "
            f"point: not even one scan point fits; the info file belongs to another movie "
            f"or is damaged. Pass nav_shape=({n_frames},) to read the frames as a stack"
        )
    if coordinates is not None and not _is_raster(info):
        n_positions = len(coordinates) * per_point * repeats
        if n_positions < n_frames:
            raise FormatError(
                f"{where} holds {n_frames} frames but its scan coordinates give only "
                f"{n_positions} positions ({len(coordinates)} points x {per_point} "
                f"frames per point x {repeats} repeats); pass nav_shape=({n_frames},) to "
                f"read the frames as a stack without coordinates"
            )
        if n_positions > n_frames:
            meta["positions_not_acquired"] = int(n_positions - n_frames)
        # frame i was taken at point (i // per_point) of the pass it falls in
        point = np.arange(n_frames) // per_point % len(coordinates)
        meta["scan_coordinates"] = coordinates[point].tolist()
        meta["scan_coordinates_order"] = "[y, x] scan pixels, one per frame"
        meta["scan_shape"] = [_int(info, "Scan - Size Y", 0), _int(info, "Scan - Size X", 0)]
        if info.get("Scan - ROI Enable") == "Enable":
            meta["scan_roi_offset"] = [_int(info, "Scan - ROI Offset Y", 0), _int(info, "Scan - ROI Offset X", 0)]
        meta["scan_shape_source"] = "_scan_coordinates.csv (positions list)"
        return (n_frames,), meta
    if not _is_raster(info):
        meta["scan_shape_source"] = (
            "frame count (stack): the _info.txt describes a non-raster scan without a "
            "_scan_coordinates.csv beside the movie"
        )
        return (n_frames,), meta
    prefix = _raster_prefix(info)
    ny, nx = _int(info, f"{prefix} Y", 0), _int(info, f"{prefix} X", 0)
    if ny * nx * per_point * repeats != n_frames:
        raise FormatError(
            f"{where} holds {n_frames} frames but its _info.txt describes a {ny}x{nx} "
            f"scan with {per_point} frames per point and {repeats} repeats "
            f"({ny * nx * per_point * repeats} frames): the acquisition was interrupted "
            f"or the info file belongs to another movie; pass nav_shape=({n_frames},) or "
            f"a (rows, columns) whose product is {n_frames}"
        )
    if per_point * repeats == 1:
        meta["scan_shape_source"] = f"_info.txt ({prefix} Y/X)"
        return (ny, nx), meta
    meta["scan_shape_source"] = (
        f"frame count (stack): the _info.txt describes a {ny}x{nx} scan with {per_point} "
        f"frames per point and {repeats} repeats, so frames are not one per position"
    )
    return (n_frames,), meta


def _de_metadata(info: dict) -> dict:
    meta = {"camera": info.get("Camera Name")}
    for name, key, scale in (
        ("exposure_time_s", "Exposure Time (seconds)", 1.0),
        ("frame_exposure_s", "Frame Exposure Time (nanoseconds)", 1e-9),
        ("frames_per_second", "Frames Per Second", 1.0),
    ):
        try:
            meta[name] = float(info[key]) * scale
        except (KeyError, ValueError):
            pass
    return meta


#: calibration part -> (keys of the _info.txt, unit). DE writes -1 for "not set". The
#: diffraction pixel size carries no unit in its key; DE-Server and RosettaSciIO's DE
#: reader give it in 1/nm.
_DE_CALIBRATION = {
    "scan_step": (("Specimen Pixel Size Y (nanometers)", "Specimen Pixel Size X (nanometers)"), "nm"),
    "detector_pixel": (("Diffraction Pixel Size Y", "Diffraction Pixel Size X"), "1/nm"),
    "camera_length": (("Instrument Project Camera Length (centimeters)",), "cm"),
    "beam_energy": (("Instrument Accelerating Voltage (V)",), "V"),
}


def de_calibration(info: dict, where: str) -> Calibration:
    """The calibration a DE ``_info.txt`` (``info``) gives; ``where`` names it."""
    parts = {}
    for name, (keys, unit) in _DE_CALIBRATION.items():
        values = [info.get(key) for key in keys]
        if None in values or all(_is_unset(v) for v in values):
            continue
        parts[name] = (values, unit)
    return file_calibration(where, parts)


def _is_unset(text: str) -> bool:
    try:
        return float(text) == -1
    except ValueError:
        return False


def de_side_file(path: str, suffix: str) -> Optional[str]:
    """The DE side file ``<prefix><suffix>`` of the movie ``<prefix>_movie.mrc`` when
    it exists (``suffix``: ``"_info.txt"``, ``"_scan_coordinates.csv"``), else None."""
    stem = os.path.splitext(path)[0]
    if stem.endswith("_movie"):
        candidate = stem[: -len("_movie")] + suffix
        if os.path.isfile(candidate):
            return candidate
    return None


# -- the reader -------------------------------------------------------------------------------
def _read_header(path: str, growing: bool = False):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                header = mrc.header.copy()
                voxel = mrc.voxel_size.copy()
    except FileNotFoundError:
        raise DataSetNotFoundError(f"file {path!r} does not exist; check the path") from None
    except (ValueError, OSError) as exc:
        raise FormatError(f"{path!r} cannot be read as MRC ({exc}); check the file or pass format=...") from None
    if header is None:
        raise FormatError(f"{path!r} is too short to hold an MRC header ({_HEADER_BYTES} bytes)")
    try:
        dtype = mrcfile.utils.data_dtype_from_header(header)
    except ValueError as exc:
        raise FormatError(
            f"{path!r} has MRC mode {int(header.mode)}, which cannot be mapped ({exc}); "
            f"modes 0, 1, 2, 3, 4, 6, 12 are supported"
        ) from None
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    # a movie still being written may not state its frame count yet
    if min(nx, ny) <= 0 or nz < 0 or (nz == 0 and not growing):
        raise FormatError(f"{path!r} has an MRC header with sizes nx={nx}, ny={ny}, nz={nz}; the file is damaged")
    return header, voxel, dtype, (nz, ny, nx)


def mrc_layout(path: str) -> tuple[int, tuple[int, int], np.dtype]:
    """``(offset, (ny, nx), dtype)``: where the frames of the MRC file ``path`` start,
    their shape and dtype, from its header alone: the file may still be growing (its
    ``nz`` is not used). Raises :class:`~stem_explorer.errors.FormatError` when the
    header is not whole or not MRC."""
    header, _voxel, dtype, (_nz, ny, nx) = _read_header(path, growing=True)
    return _HEADER_BYTES + int(header.nsymbt), (ny, nx), dtype


def describe_de_movie(path: str, n_frames: int, *, nav_shape=None, info_file=None):
    """``(nav_shape, metadata, calibration)`` of the DE movie (or plain MRC stack)
    ``path`` of ``n_frames`` frames: the ``nav_shape`` option, else the scan of its
    ``_info.txt`` (``info_file``, or the one beside it) and scan coordinates, else a
    stack; the metadata and calibration the info file gives."""
    metadata, nav, calibration = {}, (n_frames,), None
    metadata["scan_shape_source"] = f"MRC nz (stack): no {de_info_name(path)} beside the file gives a scan"
    info_file = os.fspath(info_file) if info_file is not None else de_side_file(path, "_info.txt")
    if info_file is not None:
        info = read_de_info(info_file)
        csv = de_side_file(path, "_scan_coordinates.csv")
        coords = read_scan_coordinates(csv) if csv else None
        metadata.update(info_file=info_file, scan_coordinates_file=csv, **_de_metadata(info))
        calibration = de_calibration(info, repr(os.path.basename(info_file)))
        if nav_shape is None:
            nav, scan_meta = de_scan(info, n_frames, coords, repr(path))
            metadata.update(scan_meta)
    if nav_shape is not None:
        nav = parse_shape("nav_shape", nav_shape, (1, 2))  # DataSet checks the product
        metadata["scan_shape_source"] = "nav_shape option"
    elif len(nav) == 1 and "scan_coordinates" not in metadata:
        metadata["scan_shape_hint"] = nav_shape_hint(n_frames)
    return nav, metadata, calibration


def open_mrc(path, *, nav_shape=None, info_file=None, allow_trailing: bool = False) -> DataSet:
    """Open an MRC stack, or a Direct Electron movie with its ``_info.txt``.

    ``nav_shape`` gives the scan shape; without it a DE ``<prefix>_info.txt`` beside
    ``<prefix>_movie.mrc`` (or the one passed as ``info_file``) gives it, and custom or
    random scans read their positions from ``<prefix>_scan_coordinates.csv`` into
    ``metadata["scan_coordinates"]``. A plain MRC file is a stack of ``nz`` frames.
    A file holding more bytes than its header describes is refused (a header whose
    ``nz`` or frame size is too small would read part of the data as if it were all),
    unless ``allow_trailing=True``.
    """
    path = os.fspath(path)
    header, voxel, dtype, (nz, ny, nx) = _read_header(path)
    offset = _HEADER_BYTES + int(header.nsymbt)
    frame_bytes = ny * nx * dtype.itemsize
    needed = offset + nz * frame_bytes
    size = check_file_size(
        path, needed, layout=f"an MRC stack of {nz} frames {ny}x{nx} {dtype}", allow_trailing=True
    )
    if size > needed and not allow_trailing:
        raise FormatError(
            f"{path!r} is {size} bytes, but its MRC header describes {nz} frames of "
            f"{ny}x{nx} {dtype} from byte {offset} ({needed} bytes): {size - needed} bytes "
            f"are left over ({(size - needed) // frame_bytes} more frames' worth at that "
            f"size), so the header's nx/ny/nz or mode disagree with the file; fix the "
            f"header, or pass allow_trailing=True to read only the frames it describes"
        )
    source = MappedFrameSource(path, offset=offset, n_frames=nz, sig_shape=(ny, nx), dtype=dtype)
    metadata = {
        "mrc_mode": int(header.mode),
        "extended_header_bytes": int(header.nsymbt),
        "data_offset": offset,
        "read_path": "mmap",
    }
    if size > needed:
        metadata["trailing_bytes"] = size - needed
    sizes = {axis: float(voxel[axis]) for axis in ("x", "y", "z") if float(voxel[axis]) > 0}
    if sizes:
        metadata["voxel_size_angstrom"] = sizes
    nav, described, calibration = describe_de_movie(path, nz, nav_shape=nav_shape, info_file=info_file)
    metadata.update(described)
    return DataSet(source, nav, format="mrc", path=path, metadata=metadata, calibration=calibration)


def de_info_name(path: str) -> str:
    """The name of the DE info file that would describe the movie ``path``."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return (stem[: -len("_movie")] if stem.endswith("_movie") else stem) + "_info.txt"


PLUGIN = register_reader(
    ReaderPlugin(
        name="mrc",
        open=open_mrc,
        suffixes=(".mrc", ".mrcs"),
        sniff=is_mrc,
        description="MRC stacks via mrcfile + mmap; Direct Electron movies with _info.txt",
    ),
    replace=True,
)

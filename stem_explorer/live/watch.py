"""Watched acquisition folders: explore the files a detector's own software is still
writing. :func:`watch` returns a :class:`~stem_explorer.io.live.LiveDataSet` whose
frames are the whole frames of the matching files, in name order (a series), as
the files grow and as the next ones appear.

Supported:

* Merlin ``.mib`` files (the Merlin software appends frame after frame, one or
  several files per acquisition): frames become available as soon as they are whole;
* Direct Electron movies (pattern ``*_movie.mrc``, DE-Server appends frame after
  frame): frames become available as soon as they are whole; the scan comes from the
  ``_info.txt`` beside the movie (:mod:`.de_watch`);
* DECTRIS ARINA acquisitions (pattern ``*_master.h5``: a NeXus master and data files
  ``<name>_data_NNNNNN.h5`` written one after the other): a data file's frames become
  available once the file is complete (:mod:`.arina_watch`).

The frames are read where they are written (no copy): a chunk's partition reads its
frames of one file, so tasks read them on their workers like the offline readers;
compressed frames are never decoded in the user's process. The files are the
user's: nothing is ever deleted or rewritten, and the data set's "recording" is the
files themselves.

Polling (every ``poll_s``), not inotify: detectors often write to network shares,
where inotify sees nothing. A series that stops growing for ``idle_timeout`` seconds
before the scan is complete ends interrupted ("acquisition interrupted after N of M
frames").
"""

from __future__ import annotations

import glob
import os
import time
from typing import Optional

import numpy as np

from ..errors import AcquisitionError, StemExplorerError
from ..io.base import FrameSource
from ..io.live import LiveDataSet
from ..io.mib import (
    _STORED_DTYPES,
    DecodedFrameSource,
    MibHeader,
    check_frame_headers,
    parse_frame_header,
    read_hdr,
)
from ..io.raw import MappedFrameSource, map_frames, parse_shape
from .arina_watch import watch_arina
from .de_watch import watch_de
from .series import Follower, GrowingSeries

def watch(folder, pattern: str = "*.mib", *, nav_shape=None, poll_s: float = 0.05,
          idle_timeout: float = 30.0, first_file_timeout: float = 60.0, settle_s: float = 1.0) -> LiveDataSet:
    """Follow the files matching ``pattern`` in ``folder`` while they are written.

    Parameters
    ----------
    folder, pattern
        Where the detector writes, and a glob pattern of its files: ``.mib`` files
        (the matching files, sorted by name, are one acquisition's frames in order),
        Direct Electron movies ``*_movie.mrc`` (likewise), or ARINA master files
        ``*_master.h5`` (the first matching master, whose data files
        ``<name>_data_000001.h5``... hold the frames).
    nav_shape
        The scan; by default from the ``.hdr`` beside the first ``.mib`` file
        (``Frames in Acquisition``, and ``Frames per Trigger`` as the scan width when
        it divides it), from the DE ``<prefix>_info.txt`` beside the first movie (and
        its ``_scan_coordinates.csv``: the scan the offline reader gives the complete
        movie), or from the ARINA master (``ntrigger`` x ``nimages`` frames, folded as
        :func:`~stem_explorer.io.open_dataset` folds them).
    poll_s
        Seconds between looks at the files.
    idle_timeout
        Seconds without a new frame after which an incomplete scan ends interrupted
        (for ARINA, without a change of the data file being written either).
    first_file_timeout
        Seconds to wait for the first file (and its first frame header; for DE, its
        MRC header and, without ``nav_shape``, its ``_info.txt``; for ARINA, the
        master and the first complete data file).
    settle_s
        ARINA: seconds a data file's size must stay the same before it is taken as
        complete when the next data file has not appeared yet.

    Raises
    ------
    AcquisitionError
        No file appears in time, the pattern names an unsupported format, or the scan
        shape is neither given nor stated by a ``.hdr`` or DE ``_info.txt``.
    """
    folder = os.fspath(folder)
    if pattern.lower().endswith("_master.h5"):
        return watch_arina(folder, pattern, nav_shape=nav_shape, poll_s=poll_s, idle_timeout=idle_timeout,
                           first_file_timeout=first_file_timeout, settle_s=settle_s)
    if os.path.splitext(pattern)[1].lower() in (".mrc", ".mrcs"):
        return watch_de(folder, pattern, nav_shape=nav_shape, poll_s=poll_s, idle_timeout=idle_timeout,
                        first_file_timeout=first_file_timeout)
    if os.path.splitext(pattern)[1].lower() != ".mib":
        raise AcquisitionError(
            f"watching {pattern!r}: only Merlin .mib series ('*.mib'), Direct Electron movies "
            f"('*_movie.mrc') and DECTRIS ARINA acquisitions (their master files, '*_master.h5') "
            f"can be watched; open other formats once written, with open_dataset"
        )
    first_path, first = _first_file(folder, pattern, first_file_timeout)
    nav = _scan(first_path, nav_shape)
    series = MibSeries(folder, pattern, first, nav)
    ds = LiveDataSet(series, format="mib_watch", path=folder, metadata={
        "source": f"watched folder {folder} ({pattern})", "pixel_depth": first.pixel_depth,
        "counter_depth": first.counter_depth, "chips": first.n_chips, "stored_dtype": series.dtype.str,
        "orientation": "file row order (no flip)",
    })
    follower = Follower(ds, series, folder, poll_s, idle_timeout)
    ds.set_stopper(follower.stop)
    follower.start()
    return ds


def _first_file(folder: str, pattern: str, timeout: float) -> tuple[str, MibHeader]:
    """The first matching file once it holds a whole frame header, and that header."""
    t0 = time.perf_counter()
    while True:
        paths = sorted(glob.glob(os.path.join(folder, pattern)))
        if paths:
            with open(paths[0], "rb") as f:
                head = f.read(4096)
            if len(head) >= 16:
                try:
                    first = parse_frame_header(head, repr(paths[0]))
                    if len(head) >= first.header_bytes:
                        first = parse_frame_header(head[: first.header_bytes], repr(paths[0]))
                        if first.is_raw or first.pixel_depth not in (*_STORED_DTYPES, "U01"):
                            raise AcquisitionError(
                                f"{paths[0]!r} holds {first.pixel_depth} frames, which cannot be read "
                                f"(raw read-out): acquire with U01/U08/U16/U32 frames"
                            )
                        return paths[0], first
                except StemExplorerError as exc:
                    if isinstance(exc, AcquisitionError):
                        raise
                    # the header may still be being written: look again
        if time.perf_counter() - t0 > timeout:
            raise AcquisitionError(
                f"no file matching {pattern!r} with a whole Merlin frame header appeared in "
                f"{folder!r} within {timeout:g} s; check the folder and the pattern, or raise "
                f"first_file_timeout="
            )
        time.sleep(0.05)


def _scan(first_path: str, nav_shape) -> tuple:
    if nav_shape is not None:
        return parse_shape("nav_shape", nav_shape, (1, 2))
    hdr_path = os.path.splitext(first_path)[0] + ".hdr"
    hdr = read_hdr(hdr_path) if os.path.isfile(hdr_path) else {}
    try:
        n = int(hdr["Frames in Acquisition (Number)"])
    except (KeyError, ValueError):
        raise AcquisitionError(
            f"the scan shape of {first_path!r} is unknown while it is written (no .hdr stating "
            f"'Frames in Acquisition' beside it); pass nav_shape=(rows, columns)"
        ) from None
    width = int(hdr.get("Frames per Trigger (Number)", "1") or 1)
    return (n // width, width) if 1 < width < n and n % width == 0 else (n,)


class MibSeries(GrowingSeries):
    """A series of growing ``.mib`` files, whose frames' headers must have the first
    frame's layout."""

    def __init__(self, folder: str, pattern: str, first: MibHeader, nav_shape: tuple):
        dtype = np.dtype("u1") if first.pixel_depth == "U01" else _STORED_DTYPES[first.pixel_depth]
        super().__init__(folder, pattern, nav_shape, (first.height, first.width), dtype)
        self.header = first
        self._reference: Optional[np.ndarray] = None

    def _file_source(self, path: str, n: int) -> FrameSource:
        h = self.header
        layout = dict(offset=h.header_bytes, n_frames=n, sig_shape=self.sig_shape,
                      frame_stride=h.frame_bytes)
        if h.pixel_depth == "U01":
            return DecodedFrameSource(path, decode="unpack_bits", stored_dtype="u1", **layout)
        return MappedFrameSource(path, dtype=self.dtype, **layout)

    def _whole_frames(self, path: str) -> int:
        return os.path.getsize(path) // self.header.frame_bytes

    def _check(self, path: str, start: int, stop: int) -> None:
        """The new frames' headers must have the first frame's layout."""
        h = self.header
        headers = map_frames(path, offset=0, n_frames=stop, sig_shape=(1, h.header_bytes), dtype="u1",
                             frame_stride=h.frame_bytes)[:, 0, :]
        if self._reference is None:
            self._reference = np.array(headers[0])
        check_frame_headers(headers[start:stop], self._reference, h, repr(path), first_index=start)

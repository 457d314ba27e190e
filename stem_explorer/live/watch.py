"""Watched acquisition folders: explore the files a detector's own software is still
writing. :func:`watch` returns a :class:`~stem_explorer.io.live.LiveDataSet` whose
frames are the whole frames of the matching files, in name order (a series), as
the files grow and as the next ones appear.

Supported now: Merlin ``.mib`` files (the Merlin software appends frame after frame,
one or several files per acquisition). The frames are read where they are written
(no copy): a chunk's partition maps its frames of one file, so tasks read them on
their workers like any ``.mib``. The files are the user's: nothing is ever deleted
or rewritten, and the data set's "recording" is the files themselves.

Polling (every ``poll_s``), not inotify: detectors often write to network shares,
where inotify sees nothing. A series that stops growing for ``idle_timeout`` seconds
before the scan is complete ends interrupted ("acquisition interrupted after N of M
frames").
"""

from __future__ import annotations

import glob
import math
import os
import threading
import time
from typing import Optional

import numpy as np

from ..errors import AcquisitionError, StemExplorerError
from ..io.base import FrameReader, FrameSource
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

_SUPPORTED = (".mib",)


def watch(folder, pattern: str = "*.mib", *, nav_shape=None, poll_s: float = 0.05,
          idle_timeout: float = 30.0, first_file_timeout: float = 60.0) -> LiveDataSet:
    """Follow the files matching ``pattern`` in ``folder`` while they are written.

    Parameters
    ----------
    folder, pattern
        Where the detector writes, and a glob pattern of its files (``.mib``); the
        matching files, sorted by name, are one acquisition's frames in order.
    nav_shape
        The scan; by default from the ``.hdr`` beside the first file (``Frames in
        Acquisition``, and ``Frames per Trigger`` as the scan width when it divides it).
    poll_s
        Seconds between looks at the files.
    idle_timeout
        Seconds without a new frame after which an incomplete scan ends interrupted.
    first_file_timeout
        Seconds to wait for the first file (and its first frame header).

    Raises
    ------
    AcquisitionError
        No file appears in time, the pattern names an unsupported format, or the scan
        shape is neither given nor stated by a ``.hdr``.
    """
    folder = os.fspath(folder)
    if os.path.splitext(pattern)[1].lower() not in _SUPPORTED:
        raise AcquisitionError(
            f"watching {pattern!r}: only Merlin .mib series can be watched so far (pattern "
            f"'*.mib'); open other formats once written, with open_dataset"
        )
    first_path, first = _first_file(folder, pattern, first_file_timeout)
    nav = _scan(first_path, nav_shape)
    series = MibSeries(folder, first, nav)
    ds = LiveDataSet(series, format="mib_watch", path=folder, metadata={
        "source": f"watched folder {folder} ({pattern})", "pixel_depth": first.pixel_depth,
        "counter_depth": first.counter_depth, "chips": first.n_chips, "stored_dtype": series.dtype.str,
        "orientation": "file row order (no flip)",
    })
    follower = _Follower(ds, series, folder, pattern, poll_s, idle_timeout)
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


class _FileFramesSource(FrameSource):
    """Frames ``first:first + n_frames`` (flat scan indices) of one series file, read
    through ``inner`` (whose frame 0 is frame ``first``)."""

    def __init__(self, inner: FrameSource, first: int, n_total: int):
        self.inner, self.first = inner, int(first)
        self.n_frames, self.sig_shape, self.dtype = int(n_total), inner.sig_shape, inner.dtype

    def open(self, payload=None) -> "_ShiftedReader":
        return _ShiftedReader(self.inner.open(), self.first)


class _ShiftedReader(FrameReader):
    def __init__(self, inner: FrameReader, first: int):
        self.inner, self.first = inner, first

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.inner.read(start - self.first, stop - self.first)

    def close(self) -> None:
        self.inner.close()


class MibSeries:
    """The frames of a series of growing ``.mib`` files, as a
    :class:`~stem_explorer.io.live.LiveDataSet` reads a recording: ``frames_written``
    grows as :class:`_Follower` finds whole frames; :meth:`source` maps them."""

    keep = True  # the files are the user's: never deleted
    first_held = 0

    def __init__(self, folder: str, first: MibHeader, nav_shape: tuple):
        self.dest, self.header, self.nav_shape = folder, first, nav_shape
        self.n_frames = math.prod(nav_shape)
        self.sig_shape = (first.height, first.width)
        self.dtype = np.dtype("u1") if first.pixel_depth == "U01" else _STORED_DTYPES[first.pixel_depth]
        self.files: list[list] = []  # [path, first frame, whole frames so far]
        self.frames_written = 0

    def _file_of(self, frame: int) -> list:
        return next(f for f in reversed(self.files) if f[1] <= frame)

    def piece_end(self, start: int, stop: int) -> int:
        """Where a source from frame ``start`` ends: ``stop``, or the end of the file
        holding ``start`` (a source reads one file)."""
        _path, first, count = self._file_of(start)
        return min(stop, first + count)

    def source(self, start: int, stop: int) -> FrameSource:
        """Frames ``start:stop``, found already and all in one file (see :meth:`piece_end`)."""
        if start == stop:  # the data set's placeholder source
            return _FileFramesSource(self._inner(self.files[0][0] if self.files else "", 0, 0), 0, self.n_frames)
        path, first, _count = self._file_of(start)
        return _FileFramesSource(self._inner(path, start - first, stop - start), start, self.n_frames)

    def _inner(self, path: str, skip: int, n: int) -> FrameSource:
        h = self.header
        layout = dict(offset=h.header_bytes + skip * h.frame_bytes, n_frames=n, sig_shape=self.sig_shape,
                      frame_stride=h.frame_bytes)
        if h.pixel_depth == "U01":
            return DecodedFrameSource(path, decode="unpack_bits", stored_dtype="u1", **layout)
        return MappedFrameSource(path, dtype=self.dtype, **layout)

    def release_before(self, frame: int) -> None:
        """Nothing to release: the files stay."""

    def seal(self) -> None:
        """Nothing to finish: the files are the detector's."""

    def close(self) -> str:
        return self.dest

    def close_partial(self, reason: str) -> str:
        return self.dest

    def abort(self) -> None:
        """Never deletes: the files are the user's."""


class _Follower:
    """The thread that polls the series' files and reports new whole frames."""

    def __init__(self, ds: LiveDataSet, series: MibSeries, folder: str, pattern: str, poll_s: float,
                 idle_timeout: float):
        self.ds, self.series = ds, series
        self.folder, self.pattern = folder, pattern
        self.poll_s, self.idle_timeout = float(poll_s), float(idle_timeout)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch-mib", daemon=True)
        self._reference: Optional[np.ndarray] = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(10)

    def _run(self) -> None:
        series, error = self.series, None
        last_growth = time.perf_counter()
        try:
            while series.frames_written < series.n_frames:
                if self._stop.is_set():
                    raise AcquisitionError("watching was stopped (close())")
                if self._look():
                    last_growth = time.perf_counter()
                elif time.perf_counter() - last_growth > self.idle_timeout:
                    raise AcquisitionError(f"no new frame for {self.idle_timeout:g} s (idle_timeout)")
                else:
                    time.sleep(self.poll_s)
        except StemExplorerError as exc:
            error = AcquisitionError(
                f"acquisition interrupted after {series.frames_written} of {series.n_frames} frames: {exc}; "
                f"the frames written are in {self.folder!r}"
            )
        self.ds.finish(error)

    def _look(self) -> bool:
        """Add the whole frames that appeared since the last look; True when some did."""
        series = self.series
        # the file being written first: its last frames come before the next file's
        grew = self._grow(series.files[-1]) if series.files else False
        known = [f[0] for f in series.files]
        paths = sorted(glob.glob(os.path.join(self.folder, self.pattern)))
        if paths[: len(known)] != known:
            raise AcquisitionError(f"the files of the series changed under {self.folder!r} (renamed or removed)")
        for path in paths[len(known):]:
            previous = series.files[-1] if series.files else None
            series.files.append([path, previous[1] + previous[2] if previous else 0, 0])
            grew = self._grow(series.files[-1]) or grew
        if grew:
            last = series.files[-1]
            series.frames_written = last[1] + last[2]
            self.ds.frames_recorded(frames_received=series.frames_written)
        return grew

    def _grow(self, entry: list) -> bool:
        """Count the whole frames of the series file ``entry`` (checking the new ones);
        True when there are more than last time."""
        path, first, count = entry
        whole = min(os.path.getsize(path) // self.series.header.frame_bytes, self.series.n_frames - first)
        if whole <= count:
            return False
        self._check(path, count, whole)
        entry[2] = whole
        return True

    def _check(self, path: str, start: int, stop: int) -> None:
        """The new frames' headers must have the first frame's layout."""
        h = self.series.header
        headers = map_frames(path, offset=0, n_frames=stop, sig_shape=(1, h.header_bytes), dtype="u1",
                             frame_stride=h.frame_bytes)[:, 0, :]
        if self._reference is None:
            self._reference = np.array(headers[0])
        check_frame_headers(headers[start:stop], self._reference, h, repr(path), first_index=start)

"""What the watched series of :mod:`.watch` share: the frames of one file of a series
as a source of the whole scan, a series as a :class:`~stem_explorer.io.live.LiveDataSet`
reads a recording, and the thread that polls the files."""

from __future__ import annotations

import glob
import math
import os
import threading
import time

import numpy as np

from ..errors import AcquisitionError, StemExplorerError
from ..io.base import FrameReader, FrameSource
from ..io.live import LiveDataSet


class FileFramesSource(FrameSource):
    """Frames ``first:first + inner.n_frames`` (flat scan indices) of one series file,
    read through ``inner`` (whose frame 0 is frame ``first``), in a scan of
    ``n_total`` frames. Decoding sources stay decoding (:attr:`FrameSource.decodes`),
    so the user's process reads them only in a separate one."""

    def __init__(self, inner: FrameSource, first: int, n_total: int):
        self.inner, self.first = inner, int(first)
        self.n_frames, self.sig_shape, self.dtype = int(n_total), inner.sig_shape, inner.dtype
        self.decodes = inner.decodes
        align = max(1, inner.frame_alignment)  # chunks line up with the scan's only when the file starts on one
        self.frame_alignment = align if self.first % align == 0 else 1

    @property
    def path(self):
        """The file read (errors name it)."""
        return getattr(self.inner, "path", None)

    def open(self, payload=None) -> "_ShiftedReader":
        return _ShiftedReader(self.inner.open(), self.first)


class _ShiftedReader(FrameReader):
    def __init__(self, inner: FrameReader, first: int):
        self.inner, self.first = inner, first

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.inner.read(start - self.first, stop - self.first)

    def close(self) -> None:
        self.inner.close()


class WatchedSeries:
    """The frames of a series of files a detector writes, as a
    :class:`~stem_explorer.io.live.LiveDataSet` reads a recording: ``frames_written``
    grows as :meth:`look` finds new whole frames; :meth:`source` maps them. Subclasses
    set ``files`` entries ``[path, first frame, frames so far]`` and implement
    :meth:`look` and :meth:`_file_source`."""

    keep = True  # the files are the user's: never deleted
    first_held = 0
    #: What the series waits for, when it is known (the idle timeout's error says it).
    waiting_for = ""
    #: When (``time.perf_counter()``) a file of the series last changed without giving
    #: whole frames yet (a data file being written): not idle.
    last_change = 0.0

    def __init__(self, folder: str, nav_shape: tuple, sig_shape: tuple, dtype):
        self.dest, self.nav_shape = folder, nav_shape
        self.n_frames = math.prod(nav_shape)
        self.sig_shape, self.dtype = tuple(sig_shape), np.dtype(dtype)
        self.files: list[list] = []
        self.frames_written = 0

    def look(self) -> bool:
        """Add the whole frames that appeared since the last look; True when some did."""
        raise NotImplementedError

    def _file_source(self, path: str, n: int) -> FrameSource:
        """A source of the first ``n`` frames of the series file ``path``."""
        raise NotImplementedError

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
            return FileFramesSource(self._file_source(self.files[0][0] if self.files else "", 0), 0, self.n_frames)
        path, first, _count = self._file_of(start)
        return FileFramesSource(self._file_source(path, stop - first), first, self.n_frames)

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


class GrowingSeries(WatchedSeries):
    """A series of files matching ``pattern`` (in name order) that grow frame by frame:
    ``frames_written`` grows as :meth:`look` finds whole frames at the end of the file
    being written and in the next files. Subclasses implement :meth:`_whole_frames`
    and :meth:`_check`."""

    def __init__(self, folder: str, pattern: str, nav_shape: tuple, sig_shape: tuple, dtype):
        super().__init__(folder, nav_shape, sig_shape, dtype)
        self.pattern = pattern

    def _whole_frames(self, path: str) -> int:
        """The whole frames the series file ``path`` holds so far."""
        raise NotImplementedError

    def _check(self, path: str, start: int, stop: int) -> None:
        """Check the new frames ``start:stop`` of ``path`` (their headers, say) before
        they are counted; raises :class:`~stem_explorer.errors.AcquisitionError`."""

    def look(self) -> bool:
        """Add the whole frames that appeared since the last look; True when some did."""
        # the file being written first: its last frames come before the next file's
        grew = self._grow(self.files[-1]) if self.files else False
        known = [f[0] for f in self.files]
        paths = sorted(glob.glob(os.path.join(self.dest, self.pattern)))
        if paths[: len(known)] != known:
            raise AcquisitionError(f"the files of the series changed under {self.dest!r} (renamed or removed)")
        for path in paths[len(known):]:
            self.files.append([path, self.frames_written, 0])
            grew = self._grow(self.files[-1]) or grew
        return grew

    def _grow(self, entry: list) -> bool:
        """Count the whole frames of the series file ``entry``, the last one (checking
        the new ones); True when there are more than last time. The count is kept
        file by file, so a later file that fails the checks leaves the earlier ones'
        frames counted."""
        path, first, count = entry
        whole = min(self._whole_frames(path), self.n_frames - first)
        if whole <= count:
            return False
        self._check(path, count, whole)
        entry[2] = whole
        self.frames_written = first + whole
        return True


class Follower:
    """The thread that polls a series' files (:meth:`WatchedSeries.look`), reports new
    frames to the data set, and ends the acquisition: complete once every frame is in,
    interrupted after ``idle_timeout`` s without a new one (or on a damaged series)."""

    def __init__(self, ds: LiveDataSet, series: WatchedSeries, folder: str, poll_s: float, idle_timeout: float):
        self.ds, self.series, self.folder = ds, series, folder
        self.poll_s, self.idle_timeout = float(poll_s), float(idle_timeout)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch-series", daemon=True)

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
                if series.look():
                    last_growth = time.perf_counter()
                    self.ds.frames_recorded(frames_received=series.frames_written)
                elif time.perf_counter() - max(last_growth, series.last_change) > self.idle_timeout:
                    waiting = f"; {series.waiting_for}" if series.waiting_for else ""
                    raise AcquisitionError(f"no new frame for {self.idle_timeout:g} s (idle_timeout){waiting}")
                else:
                    time.sleep(self.poll_s)
        except StemExplorerError as exc:
            error = AcquisitionError(
                f"acquisition interrupted after {series.frames_written} of {series.n_frames} frames: {exc}; "
                f"the frames written are in {self.folder!r}"
            )
        self.ds.finish(error)

"""Watched DECTRIS ARINA acquisitions: a NeXus master ``<name>_master.h5`` and data
files ``<name>_data_000001.h5``, ``..._000002.h5``... written one after the other
(frames ``/entry/data/data``, bitshuffle-LZ4 compressed through hdf5plugin).

An HDF5 file cannot be read while it is written (its index is only consistent once
the writer closes it), so a data file's frames become available all at once, when
the file is complete: the next data file exists, or the file's size has not changed
for ``settle_s`` seconds; and in both cases it opens cleanly with h5py and holds the
frames its ``image_nr_low`` / ``image_nr_high`` attributes announce (or, without
them, as many as the first file held). A file that does not open yet is looked at
again, never reported as damaged: a writer still holds it. Only metadata is read
here; the frames are decoded where the jobs' tasks run (the sources say
:attr:`~stem_explorer.io.base.FrameSource.decodes`), never in the user's process.
"""

from __future__ import annotations

import glob
import math
import os
import time
from typing import Optional

import h5py
import numpy as np

from ..errors import AcquisitionError, DataSetError, StemExplorerError
from ..io.base import FrameSource
from ..io.hdf5 import Hdf5FrameSource
from ..io.hdf5_scan import scan_shape
from ..io.live import LiveDataSet
from ..io.raw import parse_shape
from .series import Follower, WatchedSeries

_FRAMES = "/entry/data/data"
_SPECIFIC = "/entry/instrument/detector/detectorSpecific"
#: What h5py raises on a file that is still being written (truncated, locked, no dataset yet).
_NOT_READY = (OSError, KeyError, RuntimeError, ValueError)


def watch_arina(folder: str, pattern: str, *, nav_shape, poll_s: float, idle_timeout: float,
                first_file_timeout: float, settle_s: float) -> LiveDataSet:
    """:func:`~stem_explorer.live.watch` for a master file matching ``pattern``."""
    t0 = time.perf_counter()
    master, nav, nav_source = _master(folder, pattern, nav_shape, first_file_timeout)
    series = ArinaSeries(folder, master, nav, settle_s)
    while not series.look():
        if time.perf_counter() - t0 > first_file_timeout:
            raise AcquisitionError(
                f"no complete data file {os.path.basename(series.prefix)}000001.h5 of {master!r} appeared "
                f"within {first_file_timeout:g} s; check the folder, or raise first_file_timeout="
            )
        time.sleep(poll_s)
    ds = LiveDataSet(series, format="arina_watch", path=folder, metadata={
        "source": f"watched folder {folder} ({os.path.basename(master)})", "master": master,
        "scan_shape_source": nav_source, "stored_dtype": series.dtype.str,
    })
    ds.frames_recorded(frames_received=series.frames_written)
    follower = Follower(ds, series, folder, poll_s, idle_timeout)
    ds.set_stopper(follower.stop)
    follower.start()
    return ds


def _master(folder: str, pattern: str, nav_shape, timeout: float) -> tuple[str, tuple, str]:
    """The first master file matching ``pattern`` once it opens, its scan and where the
    scan came from."""
    t0 = time.perf_counter()
    while True:
        paths = sorted(glob.glob(os.path.join(folder, pattern)))
        if paths:
            try:
                with h5py.File(paths[0], "r") as f:
                    return (paths[0], *_scan(f, paths[0], nav_shape))
            except StemExplorerError:  # a RuntimeError too, but no reason to wait
                raise
            except _NOT_READY:
                pass  # still being written: look again
        if time.perf_counter() - t0 > timeout:
            raise AcquisitionError(
                f"no ARINA master file matching {pattern!r} that opens as HDF5 appeared in {folder!r} "
                f"within {timeout:g} s; check the folder and the pattern, or raise first_file_timeout="
            )
        time.sleep(0.05)


def _scan(f: h5py.File, path: str, nav_shape) -> tuple[tuple, str]:
    """The scan of the master ``f``: ``nav_shape``, else its frame count (``ntrigger``
    x ``nimages``) folded as the offline reader folds it (:func:`scan_shape`)."""
    if nav_shape is not None:
        return parse_shape("nav_shape", nav_shape, (1, 2)), "nav_shape option"
    try:
        n = math.prod(int(np.ravel(f[f"{_SPECIFIC}/{k}"][()])[0]) for k in ("ntrigger", "nimages"))
    except KeyError:
        raise AcquisitionError(
            f"the master {path!r} does not say how many frames the acquisition has (no "
            f"{_SPECIFIC}/ntrigger and nimages); pass nav_shape=(rows, columns)"
        ) from None
    if n < 1:
        raise AcquisitionError(f"the master {path!r} announces {n} frames; pass nav_shape=(rows, columns)")
    try:
        nav, source, _extra = scan_shape(f, path, "/entry/data", (n, 0, 0))
    except DataSetError as exc:  # a scan_shape attribute that contradicts the count
        raise AcquisitionError(str(exc)) from None
    return nav, source


class ArinaSeries(WatchedSeries):
    """The data files of the ARINA master ``master``, each added once complete."""

    def __init__(self, folder: str, master: str, nav_shape: tuple, settle_s: float):
        super().__init__(folder, nav_shape, (0, 0), "u1")  # detector shape and dtype: the first file's
        self.settle_s = float(settle_s)
        self.prefix = master[: -len("_master.h5")] + "_data_"
        self.frame_alignment = 1
        self._seen: dict[str, tuple] = {}  # path: (size, mtime), since when

    def _file_source(self, path: str, n: int) -> FrameSource:
        return Hdf5FrameSource(path, _FRAMES, shape=(n,) + self.sig_shape, dtype=self.dtype,
                               frame_alignment=self.frame_alignment)

    def look(self) -> bool:
        """Add the data files completed since the last look, in order; True when some were."""
        grew = False
        while self.frames_written < self.n_frames:
            path = f"{self.prefix}{len(self.files) + 1:06d}.h5"
            count = self._complete(path, os.path.exists(f"{self.prefix}{len(self.files) + 2:06d}.h5"))
            if count is None:
                break
            self.files.append([path, self.frames_written, count])
            self.frames_written += count
            grew = True
        return grew

    def _settled(self, path: str) -> bool:
        """Whether ``path``'s size and time stamp stayed the same for ``settle_s`` s."""
        st = os.stat(path)
        now, signature = time.perf_counter(), (st.st_size, st.st_mtime_ns)
        seen = self._seen.get(path)
        if seen is None or seen[0] != signature:
            self._seen[path] = (signature, now)
            self.last_change = now  # a file being written: not idle, though no frame is new
            return False
        return now - seen[1] >= self.settle_s

    def _complete(self, path: str, next_exists: bool) -> Optional[int]:
        """The frames of the data file ``path`` once it is complete, else None."""
        if not os.path.isfile(path) or not (self._settled(path) or next_exists):
            return None
        try:
            with h5py.File(path, "r") as f:
                frames = f[_FRAMES]
                shape, dtype, chunks = frames.shape, frames.dtype, frames.chunks
                low, high = (frames.attrs.get(k) for k in ("image_nr_low", "image_nr_high"))
        except _NOT_READY as exc:  # still being written (or held by its writer): look again
            self.waiting_for = f"{path!r} does not open as HDF5 yet ({exc})"
            return None
        self.waiting_for = ""
        if len(shape) != 3:
            raise AcquisitionError(f"{path!r} holds {_FRAMES} of shape {shape}, not a stack of frames")
        if self.files and (shape[1:] != self.sig_shape or dtype != self.dtype):
            raise AcquisitionError(
                f"{path!r} holds frames {shape} {dtype}, not frames like the series' "
                f"{self.sig_shape} {self.dtype}: it belongs to another acquisition"
            )
        if low is not None and int(low) != self.frames_written + 1:
            raise AcquisitionError(
                f"{path!r} starts at image {int(low)}, but image {self.frames_written + 1} comes next: "
                f"a data file of the series is missing or belongs to another acquisition"
            )
        remaining = self.n_frames - self.frames_written
        expected = int(high) - int(low) + 1 if low is not None and high is not None else (
            self.files[0][2] if self.files else 1)
        if shape[0] < min(expected, remaining):  # its dataset is still growing
            self.waiting_for = f"{path!r} holds {shape[0]} of its {expected} frames so far"
            return None
        if not self.files:
            self.sig_shape, self.dtype = tuple(int(n) for n in shape[1:]), np.dtype(dtype)
            self.frame_alignment = int(chunks[0]) if chunks else 1
        return min(int(shape[0]), remaining)

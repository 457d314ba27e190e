"""Watched Direct Electron movies: ``<prefix>_movie.mrc`` files that DE-Server is
still writing (a 1024-byte MRC header, its extended header, then frame after frame).

A frame is available as soon as it is whole in the file. The header gives the frame
shape and dtype and where the frames start; its frame count ``nz`` is not used while
the file grows. The scan comes from ``nav_shape``, else from the ``<prefix>_info.txt``
DE writes beside the movie (and ``<prefix>_scan_coordinates.csv`` for custom and
random scans), read as the offline reader (:mod:`stem_explorer.io.mrc`) reads them:
the frames it announces (scan points x frames per point x repeats) are the
acquisition's, and its scan, metadata and calibration are the complete movie's.
Frames are mapped where they are written, like the offline reader's.
"""

from __future__ import annotations

import glob
import math
import os
import time

from ..errors import AcquisitionError, FormatError
from ..io.base import FrameSource
from ..io.live import LiveDataSet
from ..io.mrc import de_frame_count, de_info_name, de_side_file, describe_de_movie, mrc_layout, read_de_info, read_scan_coordinates
from ..io.raw import MappedFrameSource, parse_shape
from .series import Follower, GrowingSeries


def watch_de(folder: str, pattern: str, *, nav_shape, poll_s: float, idle_timeout: float,
             first_file_timeout: float) -> LiveDataSet:
    """:func:`~stem_explorer.live.watch` for DE movies matching ``pattern``."""
    deadline = time.perf_counter() + first_file_timeout
    path, layout = _first_movie(folder, pattern, deadline, first_file_timeout)
    n_frames = _frame_count(path, nav_shape, deadline, first_file_timeout)
    nav, metadata, calibration = describe_de_movie(path, n_frames, nav_shape=nav_shape)
    series = MrcSeries(folder, pattern, nav, path, layout)
    metadata.update(source=f"watched folder {folder} ({pattern})", movie=path, stored_dtype=series.dtype.str)
    ds = LiveDataSet(series, format="de_watch", path=folder, metadata=metadata, calibration=calibration)
    follower = Follower(ds, series, folder, poll_s, idle_timeout)
    ds.set_stopper(follower.stop)
    follower.start()
    return ds


def _first_movie(folder: str, pattern: str, deadline: float, timeout: float) -> tuple[str, tuple]:
    """The first movie matching ``pattern`` once its header is whole, and its layout
    (:func:`~stem_explorer.io.mrc.mrc_layout`)."""
    reason = "no matching file"
    while True:
        paths = sorted(glob.glob(os.path.join(folder, pattern)))
        if paths:
            try:
                return paths[0], mrc_layout(paths[0])
            except FormatError as exc:  # the header may still be being written: look again
                reason = str(exc)
        if time.perf_counter() > deadline:
            raise AcquisitionError(
                f"no file matching {pattern!r} with a whole MRC header appeared in {folder!r} within "
                f"{timeout:g} s (last: {reason}); check the folder and the pattern, or raise first_file_timeout="
            )
        time.sleep(0.05)


def _frame_count(path: str, nav_shape, deadline: float, timeout: float) -> int:
    """The acquisition's frames: ``nav_shape``'s, else what the DE ``_info.txt`` beside
    ``path`` announces (waited for until ``deadline``)."""
    if nav_shape is not None:
        return math.prod(parse_shape("nav_shape", nav_shape, (1, 2)))
    while (info_file := de_side_file(path, "_info.txt")) is None:
        if time.perf_counter() > deadline:
            raise AcquisitionError(
                f"the scan of {path!r} is unknown while it is written: no {de_info_name(path)} appeared beside it "
                f"within {timeout:g} s (DE-Server may write it only at the end); pass nav_shape=(rows, columns)"
            )
        time.sleep(0.05)
    csv = de_side_file(path, "_scan_coordinates.csv")
    count = de_frame_count(read_de_info(info_file), read_scan_coordinates(csv) if csv else None)
    if count is None:
        raise AcquisitionError(
            f"{info_file!r} does not say how many frames the acquisition has (scanning disabled, or a "
            f"custom scan without its _scan_coordinates.csv); pass nav_shape=(rows, columns)"
        )
    return count


class MrcSeries(GrowingSeries):
    """Growing MRC movies (usually one): the whole frames after each file's headers,
    every file with the first one's frame shape and dtype."""

    def __init__(self, folder: str, pattern: str, nav_shape: tuple, first_path: str, layout: tuple):
        offset, sig_shape, dtype = layout
        super().__init__(folder, pattern, nav_shape, sig_shape, dtype)
        self.frame_bytes = math.prod(sig_shape) * self.dtype.itemsize
        self._offsets = {first_path: offset}  # where each file's frames start, once its header is whole

    def _file_source(self, path: str, n: int) -> FrameSource:
        offset = self._offsets.get(path, 0)  # 0: the data set's placeholder, nothing read
        return MappedFrameSource(path, offset=offset, n_frames=n, sig_shape=self.sig_shape, dtype=self.dtype)

    def _whole_frames(self, path: str) -> int:
        if path not in self._offsets:
            try:
                offset, sig_shape, dtype = mrc_layout(path)
            except FormatError as exc:  # its header is still being written
                self.waiting_for = str(exc)
                return 0
            if (sig_shape, dtype) != (self.sig_shape, self.dtype):
                raise AcquisitionError(
                    f"{path!r} holds frames {sig_shape} {dtype}, not frames like the series' "
                    f"{self.sig_shape} {self.dtype}: it belongs to another acquisition"
                )
            self._offsets[path], self.waiting_for = offset, ""
        return max(0, os.path.getsize(path) - self._offsets[path]) // self.frame_bytes

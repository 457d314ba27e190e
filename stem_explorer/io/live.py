"""Live data sets: scans whose frames arrive while they are explored.

A :class:`LiveDataSet` is a :class:`~.base.DataSet` (scan and detector shapes, dtype)
whose frames are recorded, in acquisition order, into a
:class:`~.partitioned.recording.Recording` by a feeder (the Merlin receiver of
:mod:`stem_explorer.live`, a watched folder). Consumers ask how many frames are
there (:attr:`~LiveDataSet.frames_available`), wait for more
(:meth:`~LiveDataSet.wait_for_frames`, or a listener called on every change), and
read ranges of them through picklable partitions (:meth:`~LiveDataSet.chunk`), so
engine tasks read the recorded frames on their workers like any file (or, for frames
recorded in this process, :attr:`~LiveDataSet.recorded_here`, a job's thread here).

The acquisition ends ``"complete"`` or ``"interrupted"`` (its error, an
:class:`~stem_explorer.errors.AcquisitionError`, says after how many frames); either
way the recording is published (:attr:`~LiveDataSet.recording_path`) unless frames
were discarded by choice (``record=None``: a spool whose parts are deleted once every
running job has read them, and kept while no job runs, see
:meth:`~LiveDataSet.register_consumer`). The spool holds at most ``spool_bytes``:
when jobs fall behind (or none runs), the feeder waits
(:meth:`~LiveDataSet.wait_for_room`), which backs up to the detector.
"""

from __future__ import annotations

import itertools
import shutil
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..errors import AcquisitionError, DataSetError
from .base import DataSet, Partition
from .calibration import Calibration
from .isolated import chunk_ranges, read_isolated
from .partitioned.recording import Recording

#: Default bound of a spool's unread frames (``record=None``).
DEFAULT_SPOOL_BYTES = 1 * 2**30


@dataclass
class LiveStats:
    """What a feeder measured so far; :meth:`LiveDataSet.stats` returns a copy."""

    frames_expected: int
    frames_received: int = 0
    bytes_received: int = 0
    #: scan positions whose frame the detector never sent (sequence number gaps; recorded as zeros)
    frames_dropped: int = 0
    dropped_examples: list = field(default_factory=list)
    #: receive buffer capacity and the most of it ever in use
    buffer_bytes: int = 0
    buffer_peak_bytes: int = 0
    #: seconds the receiver stopped reading because its buffer was full (the sender waited)
    stalled_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    ended: Optional[float] = None

    @property
    def elapsed(self) -> float:
        return (self.ended or time.perf_counter()) - self.started

    @property
    def gbps(self) -> float:
        """Received bytes per second so far, in GB/s (10**9 bytes)."""
        return self.bytes_received / self.elapsed / 1e9 if self.elapsed > 0 else 0.0


class LiveDataSet(DataSet):
    """A data set whose frames arrive over time, recorded to ``recording``.

    Created by the feeders (:func:`stem_explorer.live.merlin`); ``format`` names
    the source. ``recorded_here``: the feeder writes the frames in this process, to
    this machine's memory or disk (a receiver's spool or recording, not a folder
    that a detector's software writes), so jobs may read them here. ``close()`` stops
    the feeder (an acquisition still running ends interrupted).
    """

    def __init__(self, recording: Recording, *, format: str, path: Optional[str] = None,
                 metadata: Optional[dict] = None, spool_bytes: int = DEFAULT_SPOOL_BYTES,
                 calibration: Optional[Calibration] = None, recorded_here: bool = False):
        self.recording = recording
        self.recorded_here = bool(recorded_here)
        super().__init__(recording.source(0, 0), recording.nav_shape, format=format, path=path, metadata=metadata,
                         calibration=calibration)
        self._stats = LiveStats(frames_expected=recording.n_frames)
        self._changed = threading.Condition()
        self._available = 0
        self.state = "acquiring"
        self.error: Optional[AcquisitionError] = None
        self.recording_path: Optional[str] = None
        self._listeners: list[Callable[[], None]] = []
        self._consumers: dict[int, int] = {}
        self._tokens = itertools.count(1)
        self.spool_bytes = int(spool_bytes)
        self._stopper: Optional[Callable[[], None]] = None
        if not recording.keep:  # a spool left unread goes with the data set (or at exit)
            weakref.finalize(self, shutil.rmtree, recording.dest, True)

    # -- for consumers ---------------------------------------------------------------------
    @property
    def frames_available(self) -> int:
        """Frames recorded so far: frames ``0:frames_available`` (those still held, see
        :attr:`first_held`) can be read."""
        return self._available

    @property
    def first_held(self) -> int:
        """The first frame still recorded (later than 0 only when discarding)."""
        return self.recording.first_held

    @property
    def ended(self) -> bool:
        """Whether the acquisition is over (complete or interrupted)."""
        return self.state != "acquiring"

    def stats(self) -> LiveStats:
        """A copy of the feeder's statistics."""
        with self._changed:
            s = self._stats
            return LiveStats(**{k: getattr(s, k) for k in s.__dataclass_fields__})

    def wait_for_frames(self, count: int, timeout: Optional[float] = None) -> int:
        """Block until ``count`` frames are available or the acquisition ended (or
        ``timeout`` s passed); returns the frames available. Raises the acquisition's
        error when it was interrupted before ``count`` frames."""
        with self._changed:
            self._changed.wait_for(lambda: self._available >= count or self.ended, timeout)
            if self._available < count and self.error is not None:
                raise self.error
            return self._available

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` (in the feeder's thread; keep it short) whenever frames arrive
        or the acquisition ends."""
        with self._changed:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[], None]) -> None:
        with self._changed:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def chunk(self, index: int, start: int, stop: int) -> Partition:
        """A partition of the recorded frames ``start:stop``, or of their first part
        when a store holds them in pieces (a series of files); a task reads them on its
        worker, from where they are recorded."""
        stop = self.recording.piece_end(start, stop)
        return Partition(index, start, stop, self.recording.source(start, stop))

    def read_frames(self, start: int, stop: int) -> np.ndarray:
        """A copy of recorded frames ``start:stop`` (a clear error for frames not
        recorded yet, or discarded); frames that decode are read in a separate
        process (:mod:`.isolated`)."""
        if not 0 <= start <= stop <= self.n_frames:
            raise DataSetError(f"frame range {start}:{stop} is outside 0:{self.n_frames}")
        if not (self.first_held <= start and stop <= self._available):
            raise DataSetError(
                f"frames {start}:{stop} are not available: {self._available} of {self.n_frames} frames "
                f"recorded so far" + (f", those before {self.first_held} discarded" if self.first_held else "")
                + "; wait for them (wait_for_frames), or run a job, which follows the acquisition"
            )
        out = np.empty((stop - start,) + self.sig_shape, self.dtype)
        pos = start
        while pos < stop:  # piece by piece: a series of files holds them in several
            end = self.recording.piece_end(pos, stop)
            source = self.recording.source(pos, end)
            if source.decodes:  # compressed files: a corrupt chunk must not crash this process
                out[pos - start : end - start] = np.concatenate(read_isolated(source, chunk_ranges(source, pos, end)))
            else:
                with source.open() as reader:
                    out[pos - start : end - start] = reader.read(pos, end)
            pos = end
        return out

    def register_consumer(self) -> tuple[int, int]:
        """Register a job reading the frames in order: ``(token, first frame)``. A
        spool keeps every frame some registered consumer has not passed
        (:meth:`consumed`), and all of them while none is registered; the first frame
        is the first one still held."""
        with self._changed:
            token = next(self._tokens)
            self._consumers[token] = self.first_held
            return token, self.first_held

    def consumed(self, token: int, upto: int) -> None:
        """The consumer ``token`` has read every frame before ``upto``."""
        with self._changed:
            if token in self._consumers:
                self._consumers[token] = upto
            self._release()

    def unregister_consumer(self, token: int) -> None:
        with self._changed:
            self._consumers.pop(token, None)
            self._release()

    def close(self) -> None:
        """Stop the feeder (an acquisition still running ends interrupted) and remove
        a spool."""
        if self._stopper is not None:
            self._stopper()
        if not self.recording.keep:
            with self._changed:
                self.recording.abort()

    # -- for feeders ----------------------------------------------------------------------------
    def set_stopper(self, fn: Callable[[], None]) -> None:
        """What :meth:`close` calls to stop the feeder."""
        self._stopper = fn

    def wait_for_room(self, n_frames: int, stop: threading.Event, timeout: Optional[float] = None) -> int:
        """How many of ``n_frames`` more frames to record now (at least one): when a
        spool is full, this waits until its consumers have read some (or ``stop``);
        0 when ``timeout`` s passed first. Recording to a folder is never held back:
        the disk is the buffer."""
        if self.recording.keep:
            return n_frames
        limit = max(1, self.spool_bytes // self.frame_bytes)
        deadline = None if timeout is None else time.perf_counter() + timeout
        with self._changed:
            while (held := self.recording.frames_written - self.first_held) >= limit and not stop.is_set():
                if deadline is not None and time.perf_counter() >= deadline:
                    return 0
                self._changed.wait(0.1 if deadline is None else max(0.0, min(0.1, deadline - time.perf_counter())))
            return max(1, min(n_frames, limit - held))

    def update_stats(self, **fields) -> None:
        """Set :class:`LiveStats` ``fields``."""
        with self._changed:
            for key, value in fields.items():
                setattr(self._stats, key, value)

    def frames_recorded(self, **stats) -> None:
        """The feeder recorded more frames (``recording.frames_written``); ``stats``
        updates :class:`LiveStats` fields."""
        with self._changed:
            self._available = self.recording.frames_written
            self.update_stats(**stats)
            self._release()
            self._notify()

    def finish(self, error: Optional[AcquisitionError] = None) -> None:
        """End the acquisition: publish the recording (complete, or the part received
        when ``error`` says it was interrupted), then tell the consumers."""
        if self.ended:
            return
        try:
            if not self.recording.keep:
                self.recording.seal()  # the spool goes once its consumers have read it
            elif error is None:
                self.recording_path = self.recording.close()
            else:
                self.recording_path = self.recording.close_partial(str(error))
        except (OSError, DataSetError) as exc:  # say, the disk is full
            reason = f"{error}; " if error else ""
            error = AcquisitionError(f"{reason}the recording in {self.recording.dest!r} could not be published: {exc}")
        with self._changed:
            self._stats.ended = time.perf_counter()
            self.error = error
            self.state = "complete" if error is None else "interrupted"
            self._release()
            self._notify()

    def _release(self) -> None:
        """Delete the spool parts that no consumer needs any more, and the spool once
        the acquisition ended and every frame was read (lock held)."""
        if not self.recording.keep and self._consumers:
            upto = min(self._consumers.values())
            self.recording.release_before(upto)
            if self.ended and upto >= self._available:
                self.recording.abort()
            self._changed.notify_all()

    def _notify(self) -> None:
        self._changed.notify_all()
        for fn in list(self._listeners):
            fn()

    def __repr__(self) -> str:
        return (
            f"<LiveDataSet {self.format} {self.state} {self._available}/{self.n_frames} frames "
            f"nav={self.nav_shape} sig={self.sig_shape} dtype={self.dtype.str}>"
        )

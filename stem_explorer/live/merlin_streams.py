"""How the frames of a Merlin acquisition move from the data socket into the
recording (:mod:`.merlin` connects and checks the headers first). Two ways:

* :class:`RingStream` (a recording to a folder, and 1-bit frames): the network thread
  reads the socket into a ring buffer of whole frame messages (bounded: when it is
  full the thread stops reading, and TCP's flow control makes the detector wait);
  the recording thread checks each batch, writes the pixels from the ring to the
  recording (``os.writev``, unpacking 1-bit frames), and frees the ring;
* :class:`InPlaceStream` (a spool, ``record=None``): one thread reads each frame's
  message prefix and header into a small header buffer, and its pixels straight into
  the spool part where the jobs read them (:meth:`Recording.slot
  <stem_explorer.io.partitioned.recording.Recording.slot>`): the only copy is the
  socket's. Frames are recorded (checked, then :meth:`~Recording.commit`) a batch
  at a time, and at once when the socket has nothing more to read, so a slow stream
  is not held back. The batch (``buffer_bytes`` of messages at most) is the bounded
  buffer; back-pressure is the spool's (the thread stops reading while it is full).

Both check every frame header's layout against the first frame's (the ``.mib``
reader's :func:`~stem_explorer.io.mib.check_frame_headers`) before its frame is
recorded, read the sequence numbers (a gap is frames the detector dropped: recorded
as zero frames at their scan positions and counted), and end the acquisition the
same way.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from typing import Callable, Optional

import numpy as np

from ..errors import AcquisitionError, StemExplorerError
from ..io.live import LiveDataSet
from ..io.mib import MibHeader, check_frame_headers
from . import mpx

#: Most bytes of frames checked and recorded per step.
BATCH_BYTES = 32 * 2**20
#: Seconds between reports of the time the sender has been waiting.
STALL_REPORT_S = 0.1


class _Stream:
    """What both ways share: the first frame's header as the reference, the message
    prefix, the sequence numbers and drops, the checks, and the end."""

    def __init__(self, receiver, first: MibHeader, dtype: np.dtype):
        self.rx, self.first, self.dtype = receiver, first, dtype
        self.ds: LiveDataSet = receiver.dataset
        self.msg = mpx.PREFIX_BYTES + first.frame_bytes
        self.head_bytes = mpx.PREFIX_BYTES + first.header_bytes
        self.first_bytes = receiver._first_bytes  # the first message's start, read while checking it
        head = self.first_bytes[mpx.PREFIX_BYTES :]
        self.reference = np.frombuffer(head[: first.header_bytes], np.uint8)
        self.prefix = np.frombuffer(mpx.prefix(first.frame_bytes), np.uint8)
        seq_start = head.index(b",") + 1
        self.seq_field = (seq_start, head.index(b",", seq_start))
        self.seq_modulus = 10 ** (self.seq_field[1] - self.seq_field[0])
        self.first_seq = int(head[seq_start : self.seq_field[1]])
        self.next_position = 0
        self.dropped = 0
        self.dropped_examples: list = []
        self.received = 0  # bytes received
        self.stalled = 0.0
        self.peak = 0
        self.buffer_bytes = 0
        self.net_error: Optional[str] = None

    def threads(self) -> list[Callable[[], None]]:
        """The functions to run, each in a thread of its own."""
        raise NotImplementedError

    def _check(self, messages: np.ndarray, first_index: int) -> np.ndarray:
        """Check the messages' prefixes and headers (``messages``: one row per frame,
        from its prefix on, at least to the header's end); their sequence numbers."""
        if (messages[:, : mpx.PREFIX_BYTES] != self.prefix).any():
            k = int(np.flatnonzero((messages[:, : mpx.PREFIX_BYTES] != self.prefix).any(axis=1))[0])
            raise AcquisitionError(
                f"message {first_index + k} of {self.rx.where} is not a frame of the first frame's size "
                f"({bytes(messages[k, : mpx.PREFIX_BYTES])!r} instead of {self.prefix.tobytes()!r}); the "
                f"frames of one acquisition must have one layout"
            )
        headers = messages[:, mpx.PREFIX_BYTES : self.head_bytes]
        check_frame_headers(headers, self.reference, self.first, self.rx.where, first_index=first_index)
        a, b = self.seq_field
        digits = headers[:, a:b].astype(np.int64) - ord("0")
        return digits @ (10 ** np.arange(b - a - 1, -1, -1, dtype=np.int64))

    def _positions(self, seqs: np.ndarray) -> np.ndarray:
        """Scan positions of frames numbered ``seqs``: the first frame is position 0,
        each next number the next position; a gap is frames the detector dropped."""
        previous = self.first_seq - 1 if self.next_position == 0 else self._last_seq
        steps = np.diff(np.concatenate([[previous], seqs])) % self.seq_modulus
        if (steps == 0).any():
            k = int(np.flatnonzero(steps == 0)[0])
            raise AcquisitionError(
                f"{self.rx.where} sent frame number {int(seqs[k])} twice (frame {self.next_position + k}); "
                f"the stream is damaged"
            )
        self._last_seq = int(seqs[-1])
        gaps = steps - 1
        if gaps.any():
            for k in np.flatnonzero(gaps):
                start = self.next_position + int(k + gaps[:k].sum())
                self.dropped_examples += list(range(start, start + int(gaps[k])))[: 20 - len(self.dropped_examples)]
            self.dropped += int(gaps.sum())
        return self.next_position + np.arange(len(seqs)) + np.cumsum(gaps)

    def _recorded(self) -> None:
        """Tell the data set about the frames recorded so far."""
        self.ds.frames_recorded(
            frames_received=self.ds.recording.frames_written - self.dropped,
            bytes_received=self.received, frames_dropped=self.dropped,
            dropped_examples=list(self.dropped_examples), buffer_bytes=self.buffer_bytes,
            buffer_peak_bytes=self.peak, stalled_s=self.stalled,
        )

    def _end(self, record_all: Callable[[], None]) -> None:
        """Run ``record_all``, then end the acquisition: complete, or interrupted
        with what stopped it."""
        error: Optional[AcquisitionError] = None
        try:
            record_all()
        except StemExplorerError as exc:
            error = exc if isinstance(exc, AcquisitionError) else AcquisitionError(str(exc))
        recorded, n = self.ds.recording.frames_written, self.rx.n_frames
        if error is None and recorded < n:
            why = "receiving was stopped (close())" if self.rx._stop.is_set() else (self.net_error or "the stream ended")
            error = AcquisitionError(
                f"acquisition interrupted after {recorded} of {n} frames: {why}; the frames received are kept "
                f"({self.ds.recording.dest if self.ds.recording.keep else 'discarded: record=None'})"
            )
        elif error is not None:
            error = AcquisitionError(f"acquisition interrupted after {recorded} of {n} frames: {error}")
        try:
            self.ds.finish(error)
        finally:
            self.rx._end_connections()


class RingStream(_Stream):
    """The ring buffer between the network thread and the recording thread."""

    def __init__(self, receiver, first: MibHeader, dtype: np.dtype, buffer_bytes: int):
        super().__init__(receiver, first, dtype)
        slots = max(2, int(buffer_bytes) // self.msg)
        self.ring = np.zeros(slots * self.msg, np.uint8)
        self.ring.fill(0)  # fault its pages in now, not while the frames arrive
        self.ring[: len(self.first_bytes)] = np.frombuffer(self.first_bytes, np.uint8)
        self.buffer_bytes = len(self.ring)
        self.received = len(self.first_bytes)  # bytes ever written to the ring
        self.consumed = 0  # bytes ever freed
        self.expected = receiver.n_frames * self.msg  # the last byte the network thread reads
        self.net_done = False
        self.cond = threading.Condition()
        self.peak = self.received
        self.zero_frame = np.zeros(math.prod((first.height, first.width)) * dtype.itemsize, np.uint8)

    def threads(self) -> list[Callable[[], None]]:
        return [self.receive, self.record]

    # -- the network thread -------------------------------------------------------------------
    def receive(self) -> None:
        sock, size = self.rx._data, len(self.ring)
        view = memoryview(self.ring)
        try:
            while self.received < self.expected and not self.rx._stop.is_set():
                with self.cond:
                    while self.received - self.consumed == size and not self.rx._stop.is_set():
                        t0 = time.perf_counter()
                        self.cond.wait(STALL_REPORT_S)  # the sender waits meanwhile: say so
                        self.stalled += time.perf_counter() - t0
                        self.ds.update_stats(stalled_s=self.stalled)
                    free = size - (self.received - self.consumed)
                at = self.received % size
                room = min(free, size - at, self.expected - self.received)
                if room <= 0:
                    continue
                n = sock.recv_into(view[at : at + room], room)
                if n == 0:
                    self.net_error = "the detector closed the data connection"
                    break
                with self.cond:
                    self.received += n
                    self.peak = max(self.peak, self.received - self.consumed)
                    self.cond.notify_all()
        except OSError as exc:
            self.net_error = f"the data connection failed ({exc.strerror or exc})"
        finally:
            with self.cond:
                self.net_done = True
                self.cond.notify_all()

    # -- the recording thread ----------------------------------------------------------------
    def record(self) -> None:
        self._end(self._record_all)

    def _record_all(self) -> None:
        size = len(self.ring)
        per_batch = max(1, BATCH_BYTES // self.msg)
        while self.ds.recording.frames_written < self.rx.n_frames:
            with self.cond:
                self.cond.wait_for(lambda: self.received - self.consumed >= self.msg or self.net_done)
                whole = (self.received - self.consumed) // self.msg
                if whole == 0:
                    return  # the network thread ended; any partial message is lost
            at = self.consumed % size
            take = min(whole, per_batch, (size - at) // self.msg)
            block = self.ring[at : at + take * self.msg].reshape(take, self.msg)
            frames = self._frames(block)
            while frames:
                room = self.ds.wait_for_room(len(frames), self.rx._stop)
                self.ds.recording.write_frames(frames[:room])
                frames = frames[room:]
                if frames:
                    self.ds.frames_recorded()
            with self.cond:
                self.consumed += take * self.msg
                self.cond.notify_all()
            self._recorded()

    def _frames(self, block: np.ndarray) -> list:
        """The frames of the messages ``block`` (one per row) to record, in scan order,
        after checking prefixes, header layouts and sequence numbers."""
        first_index = self.next_position
        positions = self._positions(self._check(block, first_index))
        pixels = block[:, self.head_bytes :]
        if self.first.pixel_depth == "U01":
            pixels = np.unpackbits(pixels.reshape(len(pixels), self.first.height, -1), axis=-1).reshape(len(pixels), -1)
        frames, position = [], first_index
        for row, target in zip(pixels, positions):
            if target >= self.rx.n_frames:
                break  # frames past the scan (a longer acquisition than configured)
            frames += [self.zero_frame] * (target - position) + [row]
            position = target + 1
        self.next_position = position
        return frames


class InPlaceStream(_Stream):
    """Frames received straight into a spool's parts, in one thread."""

    def __init__(self, receiver, first: MibHeader, dtype: np.dtype, buffer_bytes: int):
        super().__init__(receiver, first, dtype)
        self.batch = max(2, min(int(buffer_bytes), BATCH_BYTES) // self.msg)  # frames per commit, at most
        self.buffer_bytes = self.batch * self.msg
        self.heads = np.zeros((self.batch, self.head_bytes), np.uint8)
        self.carry = memoryview(self.first_bytes)  # the first message's bytes read already
        self.sock = receiver._data

    def threads(self) -> list[Callable[[], None]]:
        return [self.run]

    def run(self) -> None:
        self._end(self._record_all)

    def _record_all(self) -> None:
        recording, n = self.ds.recording, self.rx.n_frames
        while recording.frames_written < n and self.net_error is None and not self.rx._stop.is_set():
            room = self._wait_for_room()
            if room == 0:
                return
            placed = self._place(min(self.batch, room))
            if placed:
                self._commit(placed)

    def _wait_for_room(self) -> int:
        """Frames the spool has room for (0 once stopped); the time the sender
        waited meanwhile is reported as it goes."""
        while True:
            t0 = time.perf_counter()
            room = self.ds.wait_for_room(self.batch, self.rx._stop, timeout=STALL_REPORT_S)
            if room or self.rx._stop.is_set():
                return room
            self.stalled += time.perf_counter() - t0
            self.ds.update_stats(stalled_s=self.stalled)

    def _place(self, most: int) -> int:
        """Receive the frames of up to ``most`` scan positions into their slots (at
        most :attr:`batch` messages, as ``most`` is), fewer when the socket has
        nothing more to read now (or fails); returns the messages received. Each
        prefix and sequence number is read as it comes (they say where the pixels
        go); the headers' layouts are checked together before they are recorded."""
        recording, n = self.ds.recording, self.rx.n_frames
        prefix, (a, b) = self.prefix.tobytes(), self.seq_field
        end = min(n, recording.frames_written + most)  # the spool's room, in scan positions
        count = 0
        while self.next_position < end:
            head = self.heads[count]
            if not self._receive(head, wait=count == 0):
                break  # nothing more now (record what came), or the connection ended
            if head[: mpx.PREFIX_BYTES].tobytes() != prefix:
                self._check(head[None], self.next_position)  # raises, naming the message
            seq = head[mpx.PREFIX_BYTES + a : mpx.PREFIX_BYTES + b].tobytes()
            if not seq.isdigit():
                raise AcquisitionError(f"frame {self.next_position} of {self.rx.where} has the sequence number "
                                       f"{seq!r}; the stream is damaged")
            seq = int(seq)
            if self.next_position and seq == (self._last_seq + 1) % self.seq_modulus:
                target, self._last_seq = self.next_position, seq  # the next one: no gap
            else:
                target = int(self._positions(np.array([seq]))[0])
            if target >= n:
                break  # frames past the scan (a longer acquisition than configured)
            for position in range(self.next_position, target):  # dropped: a reused part holds old frames
                recording.slot(position)[:] = 0
            if not self._receive(recording.slot(target)):
                break
            self.next_position = target + 1
            count += 1
            self.peak = max(self.peak, count * self.msg)
        return count

    def _receive(self, into: np.ndarray, wait: bool = True) -> bool:
        """Fill ``into`` from the socket (the first message's bytes read already
        first); False when the connection ended, or, unless ``wait``, when nothing
        has arrived yet."""
        view, got = memoryview(into).cast("B"), 0
        if self.carry:
            got = min(len(self.carry), len(view))
            view[:got], self.carry = self.carry[:got], self.carry[got:]
        try:
            if not wait and not got:
                try:
                    got = self.sock.recv_into(view, len(view), socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return False
                if got == 0:
                    self.net_error = "the detector closed the data connection"
                    return False
            while got < len(view):
                k = self.sock.recv_into(view[got:], len(view) - got)
                if k == 0:
                    self.net_error = "the detector closed the data connection"
                    return False
                got += k
        except OSError as exc:
            self.net_error = f"the data connection failed ({exc.strerror or exc})"
            return False
        finally:
            self.received += got
        return True

    def _commit(self, placed: int) -> None:
        """Check the ``placed`` frames' headers and record them (and the dropped
        frames' zeros among them)."""
        recording = self.ds.recording
        self._check(self.heads[:placed], recording.frames_written)
        recording.commit(self.next_position - recording.frames_written)
        self._recorded()

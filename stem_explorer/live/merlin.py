"""Receiving a Merlin (Quantum Detectors Medipix3) acquisition over TCP:
:func:`merlin` returns a :class:`~stem_explorer.io.live.LiveDataSet` fed by a
:class:`MerlinReceiver`.

The receiver only connects (to the configured host's control and data ports; it
never listens). With ``control=True`` it sets ``NUMFRAMESTOACQUIRE`` to the scan's
frame count (and ``COUNTERDEPTH`` when asked), connects the data port and sends
``CMD,STARTACQUISITION``; with ``control=False`` it connects the data port and waits
for an acquisition someone else starts. Before any frame is recorded it checks the
acquisition header (frame count, counter depth) and the first frame's header
(detector shape, pixel depth) against the configured scan, and refuses a mismatch.

Two threads move the frames (see docs/architecture.md, "Live acquisition"):

* the network thread reads the data socket into a ring buffer of whole frame
  messages (``buffer_bytes``, bounded). When the ring is full it stops reading, so
  TCP's flow control makes the detector wait: the time it waited is reported
  (``stalled_s``), as is the ring's peak use;
* the recording thread checks each batch of frames (message prefix and header
  layout as bytes, sequence numbers), writes their pixels from the ring to the
  recording (``os.writev``, no copy in between), frees the ring, and tells the data
  set. A gap in the sequence numbers (the detector dropped frames) is recorded as
  zero frames at those positions and counted (``frames_dropped``).

A connection that drops before the last frame ends the acquisition with
"acquisition interrupted after N of M frames"; the N frames stay recorded.
"""

from __future__ import annotations

import math
import socket
import threading
import time
from typing import Optional

import numpy as np

from ..errors import AcquisitionError, StemExplorerError
from ..io.live import DEFAULT_SPOOL_BYTES, LiveDataSet
from ..io.mib import MibHeader, check_frame_headers, parse_frame_header, parse_hdr
from ..io.partitioned.recording import Recording
from ..io.partitioned.writer import DEFAULT_FILE_BYTES
from ..io.raw import parse_shape
from . import mpx

#: Default capacity of the receive ring: about 40 ms at 1.5 GB/s. A larger ring
#: absorbs longer hiccups of the recording, but each first pass over fresh pages costs
#: page faults (a 256 MiB ring took five times the CPU time per received byte of a
#: 32 MiB one, measured over 0.55 GB).
DEFAULT_BUFFER_BYTES = 64 * 2**20
#: Most bytes of frames checked and written per step of the recording thread.
_BATCH_BYTES = 32 * 2**20
#: Bytes read with the first frame's prefix to parse its header (headers are smaller).
_HEADER_PEEK = 4096
#: Pixel depth -> dtype of the recorded frames (1-bit packed frames are unpacked).
_DTYPES = {"U01": "u1", "U08": "u1", "U16": ">u2", "U32": ">u4"}
_SPOOL_PART_BYTES = 64 * 2**20
#: Seconds between reports of the time the sender has been waiting for a full ring.
_STALL_REPORT_S = 0.1


def merlin(host: str = "127.0.0.1", control_port: int = 6341, data_port: int = 6342, *, nav_shape,
           sig_shape=None, counter_depth: Optional[int] = None, record=None, overwrite: bool = False,
           control: bool = True, timeout: float = 10.0, buffer_bytes: int = DEFAULT_BUFFER_BYTES,
           partition_bytes: Optional[int] = None, spool_bytes: int = DEFAULT_SPOOL_BYTES) -> LiveDataSet:
    """Start receiving a scan of ``nav_shape`` from the Merlin at ``host``; returns the
    live data set once the acquisition's headers have been checked.

    Parameters
    ----------
    host, control_port, data_port
        The detector (its PC running the Merlin software), the only host connected to.
    nav_shape
        The scan, ``(rows, columns)`` or ``(n,)``; its frame count is asked of the
        detector (``control=True``) and must match the acquisition header.
    sig_shape, counter_depth
        When given, the first frame's detector shape and the acquisition's counter
        depth must match (``counter_depth`` is also set on the detector).
    record
        A folder to record the frames to, as a raw partition data set (published,
        ``dataset.json`` last, when the acquisition ends; a journal makes an
        interrupted one recoverable, :func:`stem_explorer.io.partitioned.recover_recording`);
        None discards them once every running job has read them (a spool of at most
        ``spool_bytes``: a job started mid-scan then covers the frames still held).
    overwrite
        Replace a data set (or an unrecovered recording) in ``record``.
    control
        Configure and start the acquisition over the control port; False waits for
        an acquisition started by someone else (the data port only).
    timeout
        Seconds to wait for each connection and for the acquisition header.
    buffer_bytes
        Capacity of the receive ring (whole frames; at least two).
    partition_bytes
        Bytes per recorded partition file (default 256 MiB; 64 MiB in a spool).

    Raises
    ------
    AcquisitionError
        The detector cannot be reached, refuses a command, or its headers do not
        match the configured scan (nothing is recorded then).
    """
    receiver = MerlinReceiver(host, control_port, data_port, nav_shape=nav_shape, sig_shape=sig_shape,
                              counter_depth=counter_depth, control=control, timeout=timeout)
    try:
        receiver.open()
        return receiver.start(record=record, overwrite=overwrite, buffer_bytes=buffer_bytes,
                              partition_bytes=partition_bytes, spool_bytes=spool_bytes)
    except BaseException:
        receiver.stop()
        raise


class MerlinReceiver:
    """The connections to one Merlin and the threads moving one acquisition's frames
    into a :class:`LiveDataSet` (use :func:`merlin`)."""

    def __init__(self, host: str, control_port: int, data_port: int, *, nav_shape, sig_shape=None,
                 counter_depth: Optional[int] = None, control: bool = True, timeout: float = 10.0):
        self.host, self.control_port, self.data_port = host, int(control_port), int(data_port)
        self.nav_shape = parse_shape("nav_shape", nav_shape, (1, 2))
        self.sig_shape = None if sig_shape is None else parse_shape("sig_shape", sig_shape, (2,))
        self.counter_depth = None if counter_depth is None else int(counter_depth)
        self.n_frames = math.prod(self.nav_shape)
        self.control, self.timeout = bool(control), float(timeout)
        self.where = f"the Merlin data port {host}:{data_port}"
        self._control: Optional[socket.socket] = None
        self._data: Optional[socket.socket] = None
        self._started = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.header: Optional[dict] = None
        self.first: Optional[MibHeader] = None
        self.dataset: Optional[LiveDataSet] = None

    # -- connecting and checking -----------------------------------------------------------
    def open(self) -> None:
        """Connect, start the acquisition (``control=True``), read and check the
        acquisition header and the first frame's header."""
        if self.control:
            self._control = self._connect(self.control_port, "control")
            self.command("SET", "NUMFRAMESTOACQUIRE", self.n_frames)
            if self.counter_depth is not None:
                self.command("SET", "COUNTERDEPTH", self.counter_depth)
        self._data = self._connect(self.data_port, "data")
        if self.control:
            self.command("CMD", "STARTACQUISITION")
            self._started = True
        self._data.settimeout(self.timeout)
        try:
            self.header = parse_hdr(mpx.read_text_message(self._data, self.where))
            self._check_acquisition_header()
            self._ring_start = self._read_first_frame_header()
        except socket.timeout:
            raise AcquisitionError(
                f"{self.where} sent no acquisition within {self.timeout:g} s"
                + ("" if self.control else " (control=False: start the acquisition on the detector)")
                + "; check that the detector is acquiring, or raise timeout="
            ) from None
        self._data.settimeout(None)

    def _connect(self, port: int, what: str) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, port), timeout=self.timeout)
        except OSError as exc:
            raise AcquisitionError(
                f"cannot connect to the Merlin {what} port {self.host}:{port} ({exc.strerror or exc}); "
                f"check that the Merlin software (or `stem-explorer simulate merlin`) runs there and "
                f"the host and port"
            ) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if what == "data":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 2**20)
        return sock

    def command(self, kind: str, name: str, value=None) -> Optional[str]:
        """Send one control request; the GET value (None for SET/CMD)."""
        where = f"the Merlin control port {self.host}:{self.control_port}"
        try:
            self._control.sendall(mpx.request(kind, name, value))
            return mpx.parse_response(mpx.read_text_message(self._control, where), kind, name, where)
        except (OSError, socket.timeout) as exc:
            raise AcquisitionError(f"{where} did not answer {kind},{name} ({exc})") from None

    def _check_acquisition_header(self) -> None:
        stated = _int_field(self.header, "Frames in Acquisition (Number)")
        problems = []
        if stated is not None and stated != self.n_frames:
            problems.append(f"{stated} frames in the acquisition, but nav_shape {self.nav_shape} has {self.n_frames}")
        per_trigger = _int_field(self.header, "Frames per Trigger (Number)")
        width = self.nav_shape[-1]
        if per_trigger is not None and per_trigger not in (1, width, self.n_frames) and width % per_trigger:
            problems.append(f"{per_trigger} frames per trigger, which does not divide a scan row of {width}")
        depth = _int_field(self.header, "Counter Depth (number)")
        if self.counter_depth is not None and depth is not None and depth != self.counter_depth:
            problems.append(f"counter depth {depth}, but counter_depth={self.counter_depth} was asked")
        if problems:
            self._refuse("acquisition header", problems)

    def _read_first_frame_header(self) -> int:
        """Read the first frame message's prefix and header into a buffer that becomes
        the ring's start; check it. Returns the bytes read."""
        head = memoryview(bytearray(mpx.PREFIX_BYTES + _HEADER_PEEK))
        mpx.recv_exact(self._data, mpx.PREFIX_BYTES, self.where, into=head)
        length = mpx.payload_length(bytes(head[: mpx.PREFIX_BYTES]), self.where)
        peek = min(length, _HEADER_PEEK)
        mpx.recv_exact(self._data, peek, self.where, into=head[mpx.PREFIX_BYTES :])
        try:
            first = parse_frame_header(bytes(head[mpx.PREFIX_BYTES : mpx.PREFIX_BYTES + peek]), f"the first frame of {self.where}")
        except StemExplorerError as exc:
            raise AcquisitionError(str(exc)) from None
        problems = []
        if first.is_raw or first.pixel_depth not in _DTYPES:
            problems.append(f"pixel depth {first.pixel_depth} (raw read-out is not supported: acquire with U01/U08/U16/U32 frames)")
        elif first.frame_bytes != length:
            problems.append(f"a {length}-byte frame message where its header says {first.frame_bytes} bytes")
        if self.sig_shape is not None and (first.height, first.width) != self.sig_shape:
            problems.append(f"{first.height}x{first.width} frames, but sig_shape {self.sig_shape} was asked")
        if problems:
            self._refuse("first frame header", problems)
        self.first = first
        self._first_bytes = bytes(head[: mpx.PREFIX_BYTES + peek])
        return mpx.PREFIX_BYTES + peek

    def _refuse(self, what: str, problems: list) -> None:
        raise AcquisitionError(
            f"refused the acquisition from {self.host}: its {what} does not match the configured "
            f"scan: {'; '.join(problems)}. Nothing was recorded; configure the detector and "
            f"stem_explorer.live.merlin(...) for the same scan"
        )

    # -- receiving -------------------------------------------------------------------------------
    def start(self, *, record=None, overwrite: bool = False, buffer_bytes: int = DEFAULT_BUFFER_BYTES,
              partition_bytes: Optional[int] = None, spool_bytes: int = DEFAULT_SPOOL_BYTES) -> LiveDataSet:
        """Create the recording and the data set, and start the two threads."""
        first = self.first
        dtype = np.dtype(_DTYPES[first.pixel_depth])
        keep = record is not None
        metadata = {
            "source": f"merlin://{self.host}:{self.data_port}",
            "acquisition_header": self.header,
            "pixel_depth": first.pixel_depth,
            "counter_depth": first.counter_depth or _int_field(self.header, "Counter Depth (number)"),
            "chips": first.n_chips,
            "sensor_layout": first.layout,
            "exposure_s": first.exposure_s,
            "stored_dtype": dtype.str,
            "orientation": "file row order (no flip)",
        }
        if not keep:  # spool parts are released whole: several must fit in the spool
            frame_bytes = first.height * first.width * dtype.itemsize
            partition_bytes = min(partition_bytes or _SPOOL_PART_BYTES, max(frame_bytes, spool_bytes // 2))
        recording = Recording(
            record, nav_shape=self.nav_shape, sig_shape=(first.height, first.width), dtype=dtype,
            partition_bytes=partition_bytes or DEFAULT_FILE_BYTES,
            metadata=metadata, overwrite=overwrite, keep=keep,
        )
        self.dataset = LiveDataSet(recording, format="merlin_live", path=recording.dest if keep else None,
                                   metadata=metadata, spool_bytes=spool_bytes)
        self.dataset.set_stopper(self.stop)
        self._stream = _FrameStream(self, first, dtype, buffer_bytes)
        for target in (self._stream.receive, self._stream.record):
            thread = threading.Thread(target=target, name=f"merlin-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self.dataset

    def stop(self) -> None:
        """Stop receiving (an acquisition still running ends interrupted) and close the
        connections; the detector is told to stop when this receiver started it."""
        self._end_connections()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(10)
        if self._data is not None:
            self._data.close()

    def _end_connections(self) -> None:
        """Wake the network thread (its socket reads end) and leave the control port,
        stopping the acquisition first unless it completed."""
        self._stop.set()
        if self._data is not None:
            try:
                self._data.shutdown(socket.SHUT_RDWR)
            except OSError:  # not connected any more
                pass
        complete = self.dataset is not None and self.dataset.state == "complete"
        if self._started and not complete:
            try:
                self.command("CMD", "STOPACQUISITION")
            except AcquisitionError:  # the detector went away
                pass
        self._started = False
        if self._control is not None:
            self._control.close()


class _FrameStream:
    """The ring buffer between the network thread and the recording thread."""

    def __init__(self, receiver: MerlinReceiver, first: MibHeader, dtype: np.dtype, buffer_bytes: int):
        self.rx, self.first, self.dtype = receiver, first, dtype
        self.ds: LiveDataSet = receiver.dataset
        self.msg = mpx.PREFIX_BYTES + first.frame_bytes
        slots = max(2, int(buffer_bytes) // self.msg)
        self.ring = np.zeros(slots * self.msg, np.uint8)
        self.ring.fill(0)  # fault its pages in now, not while the frames arrive
        self.ring[: len(receiver._first_bytes)] = np.frombuffer(receiver._first_bytes, np.uint8)
        self.received = len(receiver._first_bytes)  # bytes ever written to the ring
        self.consumed = 0  # bytes ever freed
        self.expected = receiver.n_frames * self.msg  # the last byte the network thread reads
        self.net_done = False
        self.net_error: Optional[str] = None
        self.cond = threading.Condition()
        self.stalled = 0.0
        self.peak = self.received
        head = receiver._first_bytes[mpx.PREFIX_BYTES :]
        self.reference = np.frombuffer(head[: first.header_bytes], np.uint8)
        self.prefix = np.frombuffer(mpx.prefix(first.frame_bytes), np.uint8)
        seq_start = head.index(b",") + 1
        self.seq_field = (seq_start, head.index(b",", seq_start))
        self.seq_modulus = 10 ** (self.seq_field[1] - self.seq_field[0])
        self.first_seq = int(head[seq_start : self.seq_field[1]])
        self.next_position = 0
        self.dropped = 0
        self.dropped_examples: list = []
        self.zero_frame = np.zeros(math.prod((first.height, first.width)) * dtype.itemsize, np.uint8)

    # -- the network thread -------------------------------------------------------------------
    def receive(self) -> None:
        sock, size = self.rx._data, len(self.ring)
        view = memoryview(self.ring)
        try:
            while self.received < self.expected and not self.rx._stop.is_set():
                with self.cond:
                    while self.received - self.consumed == size and not self.rx._stop.is_set():
                        t0 = time.perf_counter()
                        self.cond.wait(_STALL_REPORT_S)  # the sender waits meanwhile: say so
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
        error: Optional[AcquisitionError] = None
        try:
            self._record_all()
        except StemExplorerError as exc:
            error = exc if isinstance(exc, AcquisitionError) else AcquisitionError(str(exc))
        recorded = self.ds.recording.frames_written
        if error is None and recorded < self.rx.n_frames:
            why = "receiving was stopped (close())" if self.rx._stop.is_set() else (self.net_error or "the stream ended")
            error = AcquisitionError(
                f"acquisition interrupted after {recorded} of {self.rx.n_frames} frames: {why}; the "
                f"frames received are kept ({self.ds.recording.dest if self.ds.recording.keep else 'discarded: record=None'})"
            )
        elif error is not None:
            error = AcquisitionError(f"acquisition interrupted after {recorded} of {self.rx.n_frames} frames: {error}")
        try:
            self.ds.finish(error)
        finally:
            self.rx._end_connections()

    def _record_all(self) -> None:
        size = len(self.ring)
        per_batch = max(1, _BATCH_BYTES // self.msg)
        while self.ds.recording.frames_written < self.rx.n_frames:
            with self.cond:
                self.cond.wait_for(lambda: self.received - self.consumed >= self.msg or self.net_done)
                whole = (self.received - self.consumed) // self.msg
                if whole == 0:
                    return  # the network thread ended; any partial message is lost
            at = self.consumed % size
            take = min(whole, per_batch, (size - at) // self.msg)
            block = self.ring[at : at + take * self.msg].reshape(take, self.msg)
            frames = self._check(block)
            while frames:
                room = self.ds.wait_for_room(len(frames), self.rx._stop)
                self.ds.recording.write_frames(frames[:room])
                frames = frames[room:]
                if frames:
                    self.ds.frames_recorded()
            with self.cond:
                self.consumed += take * self.msg
                self.cond.notify_all()
            self.ds.frames_recorded(
                frames_received=self.ds.recording.frames_written - self.dropped,
                bytes_received=self.received, frames_dropped=self.dropped,
                dropped_examples=list(self.dropped_examples), buffer_bytes=size,
                buffer_peak_bytes=self.peak, stalled_s=self.stalled,
            )

    def _check(self, block: np.ndarray) -> list:
        """The frames of the messages ``block`` (one per row) to record, in scan order,
        after checking prefixes, header layouts and sequence numbers."""
        first_index = self.next_position
        if (block[:, : mpx.PREFIX_BYTES] != self.prefix).any():
            k = int(np.flatnonzero((block[:, : mpx.PREFIX_BYTES] != self.prefix).any(axis=1))[0])
            raise AcquisitionError(
                f"message {first_index + k} of {self.rx.where} is not a frame of the first frame's size "
                f"({bytes(block[k, : mpx.PREFIX_BYTES])!r} instead of {self.prefix.tobytes()!r}); the "
                f"frames of one acquisition must have one layout"
            )
        headers = block[:, mpx.PREFIX_BYTES : mpx.PREFIX_BYTES + self.first.header_bytes]
        check_frame_headers(headers, self.reference, self.first, self.rx.where, first_index=first_index)
        a, b = self.seq_field
        digits = headers[:, a:b].astype(np.int64) - ord("0")
        seqs = digits @ (10 ** np.arange(b - a - 1, -1, -1, dtype=np.int64))
        positions = self._positions(seqs)
        pixels = block[:, mpx.PREFIX_BYTES + self.first.header_bytes :]
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


def _int_field(header: Optional[dict], key: str) -> Optional[int]:
    try:
        return int(header[key]) if header else None
    except (KeyError, ValueError):
        return None

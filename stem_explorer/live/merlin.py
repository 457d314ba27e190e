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

The frames then move into the recording (:mod:`.merlin_streams`; see
docs/architecture.md, "Live acquisition"): into a spool (``record=None``) straight
from the socket, in place; to a folder through a bounded ring buffer and a recording
thread. Either way the buffer is bounded (``buffer_bytes``): when it, or the spool,
is full the receiver stops reading, so TCP's flow control makes the detector wait
(reported: ``stalled_s``, and the buffer's peak use); every frame header is checked
against the first; a gap in the sequence numbers (the detector dropped frames) is
recorded as zero frames at those positions and counted (``frames_dropped``).

A connection that drops before the last frame ends the acquisition with
"acquisition interrupted after N of M frames"; the N frames stay recorded.
"""

from __future__ import annotations

import math
import socket
import threading
from typing import Optional

import numpy as np

from ..errors import AcquisitionError, StemExplorerError
from ..io.live import DEFAULT_SPOOL_BYTES, LiveDataSet
from ..io.mib import MibHeader, parse_frame_header, parse_hdr
from ..io.partitioned.recording import Recording
from ..io.partitioned.writer import DEFAULT_FILE_BYTES
from ..io.raw import parse_shape
from . import mpx
from .merlin_streams import InPlaceStream, RingStream

#: Default capacity of the receive ring: about 40 ms at 1.5 GB/s. A larger ring
#: absorbs longer hiccups of the recording, but each first pass over fresh pages costs
#: page faults (a 256 MiB ring took five times the CPU time per received byte of a
#: 32 MiB one, measured over 0.55 GB).
DEFAULT_BUFFER_BYTES = 64 * 2**20
#: Bytes read with the first frame's prefix to parse its header (headers are smaller).
_HEADER_PEEK = 4096
#: Pixel depth -> dtype of the recorded frames (1-bit packed frames are unpacked).
_DTYPES = {"U01": "u1", "U08": "u1", "U16": ">u2", "U32": ">u4"}
_SPOOL_PART_BYTES = 64 * 2**20


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
        Capacity of the receive buffer, in whole frame messages (at least two): the
        ring a folder recording goes through, or, received in place into a spool,
        the frames received before they are checked and recorded (at most 32 MiB).
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
        spool_parts = 0
        if not keep:  # spool parts are released whole: several must fit in the spool
            frame_bytes = first.height * first.width * dtype.itemsize
            partition_bytes = min(partition_bytes or _SPOOL_PART_BYTES, max(frame_bytes, spool_bytes // 2))
            spool_parts = max(2, spool_bytes // (partition_bytes // frame_bytes * frame_bytes))
        recording = Recording(
            record, nav_shape=self.nav_shape, sig_shape=(first.height, first.width), dtype=dtype,
            partition_bytes=partition_bytes or DEFAULT_FILE_BYTES,
            metadata=metadata, overwrite=overwrite, keep=keep, spool_parts=spool_parts,
        )
        self.dataset = LiveDataSet(recording, format="merlin_live", path=recording.dest if keep else None,
                                   metadata=metadata, spool_bytes=spool_bytes, recorded_here=True)
        self.dataset.set_stopper(self.stop)
        # a spool is received in place (no copy); a recording to a folder, and 1-bit
        # frames (unpacked), go through the ring
        in_place = not keep and first.pixel_depth != "U01"
        self._stream = (InPlaceStream if in_place else RingStream)(self, first, dtype, buffer_bytes)
        for target in self._stream.threads():
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


def _int_field(header: Optional[dict], key: str) -> Optional[int]:
    try:
        return int(header[key]) if header else None
    except (KeyError, ValueError):
        return None

"""A Merlin detector simulator: serves the frames of a ``.mib`` file over the MerlinEM
control and data ports (:mod:`.mpx`), for tests, demos and users without a detector.

``stem-explorer simulate merlin FILE.mib --nav-shape Y X --fps N`` runs one; in Python,
:class:`MerlinSimulator` (a context manager) does the same in background threads.

What it does, as a Merlin does:

* the control port answers ``GET``/``SET``/``CMD`` requests: ``NUMFRAMESTOACQUIRE``
  and ``NUMFRAMESPERTRIGGER`` set the next acquisition, ``COUNTERDEPTH`` only accepts
  the file's depth, other known settings are stored and echoed, unknown names get
  code 2; ``CMD,STARTACQUISITION`` starts an acquisition on the connected data
  client, ``CMD,STOPACQUISITION`` stops it;
* the data port sends, per acquisition, the acquisition header (the ``.hdr`` beside
  the file, or one made up, with the frame counts of this acquisition) and then each
  frame as ``MPX,<length>,`` + the frame's header and pixels exactly as the file
  stores them. An acquisition of more frames than the file holds cycles through
  them, numbering the frames on (the header's sequence number field is rewritten in
  place, same width); the first pass is the file's bytes unchanged.

Frames go out at ``fps`` frames per second, or as fast as the receiver takes them
(``fps=None``), several per ``sendmsg`` call. Sockets bind to 127.0.0.1 unless told
otherwise; port 0 picks free ports (see :attr:`MerlinSimulator.control_port`).
"""

from __future__ import annotations

import datetime
import logging
import math
import mmap
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Optional

from ..errors import DataSetError
from ..io.mib import open_mib
from ..io.raw import parse_shape
from . import mpx

log = logging.getLogger(__name__)

#: Frames (or bytes) sent per ``sendmsg`` call at full speed.
_BATCH_FRAMES = 64
_BATCH_BYTES = 16 * 2**20
#: Seconds a start waits for a data client to be accepted.
_DATA_CLIENT_WAIT = 2.0
#: Settings a SET stores and a GET returns (besides the frame counts).
_SETTINGS = {
    "ACQUISITIONTIME": "1.000000", "ACQUISITIONPERIOD": "1.000000", "CONTINUOUSRW": "1",
    "TRIGGERSTART": "0", "TRIGGERSTOP": "0", "FILEENABLE": "0", "RUNHEADLESS": "1",
    "HVBIAS": "120", "THRESHOLD0": "10", "THRESHOLD1": "511", "COLOURMODE": "0",
    "CHARGESUMMING": "0", "GAIN": "0", "ENABLECOUNTER1": "0", "FILEFORMAT": "0",
}


class MerlinSimulator:
    """Serve the frames of the Merlin ``.mib`` file ``path`` as a Merlin would.

    ``nav_shape`` is the scan of one acquisition (default: the file's own, from its
    ``.hdr`` or time stamps); a receiver may ask for another frame count with
    ``SET,NUMFRAMESTOACQUIRE``. ``fps`` paces the frames (None: as fast as the
    receiver reads). ``start_on_connect`` starts an acquisition whenever a data
    client connects, for receivers that do not use the control port.
    ``drop_frames`` (acquisition frame indices) are skipped, as a detector that
    loses frames skips them: their sequence numbers are missing from the stream.
    """

    def __init__(self, path, *, nav_shape=None, fps: Optional[float] = None, host: str = "127.0.0.1",
                 control_port: int = 6341, data_port: int = 6342, start_on_connect: bool = False,
                 drop_frames=()):
        self.path = os.fspath(path)
        self._file = open_mib(self.path)  # checks every frame header
        meta = self._file.metadata
        self.nav_shape = self._file.nav_shape if nav_shape is None else parse_shape("nav_shape", nav_shape, (1, 2))
        self.header_bytes = int(meta["header_bytes"])
        self.frame_stride = int(meta["frame_stride"])
        self.n_file_frames = self._file.n_frames
        self.counter_depth = meta["counter_depth"]
        self._hdr = meta.get("hdr")
        if fps is not None and not fps > 0:
            raise DataSetError(f"fps must be a positive number of frames per second or None, got {fps!r}")
        self.fps = fps
        self.host = host
        self.start_on_connect = start_on_connect
        self.drop_frames = frozenset(int(k) for k in drop_frames)
        self._settings = dict(_SETTINGS)
        self._frames_to_acquire = math.prod(self.nav_shape)
        self._frames_per_trigger = 1
        self._seq_at, self._seq_width, self._first_seq = self._sequence_field()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._acquiring = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._abort = threading.Event()
        self._data_conn: Optional[socket.socket] = None
        self._data_connected = threading.Event()
        self._threads: list[threading.Thread] = []
        self.frames_sent = 0
        self.acquisitions = 0
        self._control = self._listen(control_port)
        self._data = self._listen(data_port)
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    # -- life cycle -------------------------------------------------------------------------
    @property
    def control_port(self) -> int:
        """The control port listened on (the one asked for, or the free one picked)."""
        return self._control.getsockname()[1]

    @property
    def data_port(self) -> int:
        """The data port listened on."""
        return self._data.getsockname()[1]

    def start(self) -> "MerlinSimulator":
        """Serve both ports in background threads."""
        for target in (self._serve_control, self._serve_data):
            thread = threading.Thread(target=target, name=f"merlin-sim-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def serve_forever(self) -> None:
        """Serve until :meth:`stop` is called from another thread (or the process ends)."""
        self.start()
        self._stop.wait()

    def stop(self) -> None:
        """Stop serving: close the listening sockets and any connection."""
        self._stop.set()
        self._abort.set()
        for sock in (self._control, self._data, self._data_conn):
            _close(sock)
        for thread in self._threads:
            thread.join(5)
        try:
            self._map.close()
        except BufferError:  # a send still holds a view; the process's exit frees it
            pass

    def __enter__(self) -> "MerlinSimulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _listen(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, int(port)))
        except OSError as exc:
            sock.close()
            raise DataSetError(
                f"the Merlin simulator cannot listen on {self.host}:{port} ({exc.strerror}); "
                f"choose another port (0 picks a free one)"
            ) from None
        sock.listen(1)
        sock.settimeout(0.2)
        return sock

    def _accept(self, server: socket.socket) -> Optional[socket.socket]:
        while not self._stop.is_set():
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            except OSError:  # closed by stop()
                return None
            conn.settimeout(None)
            return conn
        return None

    # -- control port -----------------------------------------------------------------------
    def _serve_control(self) -> None:
        while (conn := self._accept(self._control)) is not None:
            with conn:
                try:
                    while not self._stop.is_set():
                        text = mpx.read_text_message(conn, "the control client")
                        conn.sendall(self._answer(*mpx.parse_request(text)))
                except Exception as exc:  # the client left or sent garbage: wait for the next
                    log.debug("control connection ended: %s", exc)

    def _answer(self, kind: str, name: str, value: Optional[str]) -> bytes:
        if kind == "GET":
            found = self._get(name)
            return mpx.response(kind, name, mpx.OK if found is not None else mpx.UNKNOWN, found or "")
        if kind == "SET":
            return mpx.response(kind, name, self._set(name, value))
        if kind == "CMD":
            return mpx.response(kind, name, self._command(name))
        return mpx.response(kind, name, mpx.UNKNOWN)

    def _get(self, name: str) -> Optional[str]:
        values = {
            "NUMFRAMESTOACQUIRE": str(self._frames_to_acquire),
            "NUMFRAMESPERTRIGGER": str(self._frames_per_trigger),
            "COUNTERDEPTH": str(self.counter_depth),
            "DETECTORSTATUS": "1" if self._acquiring.is_set() else "0",
            "SOFTWAREVERSION": "stem_explorer Merlin simulator",
        }
        return values.get(name, self._settings.get(name))

    def _set(self, name: str, value: Optional[str]) -> int:
        if self._acquiring.is_set():
            return mpx.BUSY
        if name in ("NUMFRAMESTOACQUIRE", "NUMFRAMESPERTRIGGER"):
            if value is None or not value.isdigit() or int(value) < 1:
                return mpx.OUT_OF_RANGE
            if name == "NUMFRAMESTOACQUIRE":
                self._frames_to_acquire = int(value)
            else:
                self._frames_per_trigger = int(value)
            return mpx.OK
        if name == "COUNTERDEPTH":  # the file's frames have one depth
            return mpx.OK if value == str(self.counter_depth) else mpx.OUT_OF_RANGE
        if name in self._settings and value is not None:
            self._settings[name] = value
            return mpx.OK
        return mpx.UNKNOWN

    def _command(self, name: str) -> int:
        if name == "STARTACQUISITION":
            return self._start_acquisition()
        if name in ("STOPACQUISITION", "ABORT"):
            self._abort.set()
            self._idle.wait(5)  # answered once stopped: the next SET finds it idle
            return mpx.OK
        if name in ("SOFTTRIGGER", "RESET"):
            return mpx.OK
        return mpx.UNKNOWN

    def _start_acquisition(self) -> int:
        # a client connects the data port just before it starts: give the accept a moment
        self._data_connected.wait(_DATA_CLIENT_WAIT)
        with self._lock:
            if self._acquiring.is_set() or self._data_conn is None:
                return mpx.BUSY  # busy, or no data client to send to
            self._acquiring.set()
            self._idle.clear()
            self._abort.clear()
            conn = self._data_conn
        thread = threading.Thread(target=self._acquire, args=(conn,), name="merlin-sim-acquisition", daemon=True)
        thread.start()
        self._threads.append(thread)
        return mpx.OK

    # -- data port --------------------------------------------------------------------------
    def _serve_data(self) -> None:
        while (conn := self._accept(self._data)) is not None:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 2**20)
            with self._lock:
                _close(self._data_conn)  # one data client at a time: the newest
                self._data_conn = conn
                self._data_connected.set()
                self._abort.set()  # an acquisition still sending to the old client ends
            self._idle.wait(5)
            if self.start_on_connect:
                self._start_acquisition()

    def acquisition_header(self, n_frames: int) -> bytes:
        """The acquisition header for ``n_frames`` frames: the ``.hdr`` beside the file
        with this acquisition's frame counts, or a minimal one."""
        counts = {
            "Frames in Acquisition (Number)": str(n_frames),
            "Frames per Trigger (Number)": str(self._frames_per_trigger),
        }
        if self._hdr:
            fields = dict(self._hdr, **counts)
        else:
            fields = {
                "Time and Date Stamp (day, mnth, yr, hr, min, s)":
                    datetime.datetime.now().strftime("%d/%m/%Y %H:%M:%S"),
                "Assembly Size (NX1, 2X2)": "   1x1" if self._file.metadata["chips"] == 1 else "   2x2",
                "Counter Depth (number)": str(self.counter_depth),
                **counts,
            }
        lines = ["HDR,\t"] + [f"{key}:\t{value}" for key, value in fields.items()] + ["End\t"]
        return "\r\n".join(lines).encode("latin-1")

    def _acquire(self, conn: socket.socket) -> None:
        """Send one acquisition to ``conn``: header, then the frames."""
        n_frames = self._frames_to_acquire
        try:
            conn.sendall(mpx.message(self.acquisition_header(n_frames)))
            t0 = time.perf_counter()
            sent = 0
            while sent < n_frames and not self._abort.is_set():
                due = n_frames
                if self.fps is not None:  # frame j is due at t0 + j / fps
                    late = time.perf_counter() - t0
                    due = min(n_frames, int(late * self.fps) + 1)
                    if due <= sent:
                        time.sleep(min(0.05, sent / self.fps - late))
                        continue
                k = min(due - sent, _BATCH_FRAMES, max(1, _BATCH_BYTES // self.frame_stride))
                _send_all(conn, self._frame_buffers(sent, k))
                sent += k
                self.frames_sent += k
        except OSError as exc:  # the receiver went away: the acquisition ends
            log.debug("data connection ended: %s", exc)
        finally:
            self.acquisitions += 1
            self._acquiring.clear()
            self._idle.set()

    def _frame_buffers(self, first: int, count: int) -> list:
        """The buffers of frames ``first:first + count`` of the acquisition: prefix,
        header (renumbered on later passes through the file) and pixels, each."""
        buffers = []
        prefix = mpx.prefix(self.frame_stride)
        view = memoryview(self._map)
        for k in range(first, first + count):
            if k in self.drop_frames:
                continue
            i = k % self.n_file_frames
            at = i * self.frame_stride
            record = view[at : at + self.frame_stride]
            if k < self.n_file_frames:
                buffers += [prefix, record]
                continue
            header = bytearray(record[: self.header_bytes])
            seq = (self._first_seq + k) % 10**self._seq_width
            header[self._seq_at : self._seq_at + self._seq_width] = b"%0*d" % (self._seq_width, seq)
            buffers += [prefix, header, record[self.header_bytes :]]
        return buffers

    def _sequence_field(self) -> tuple[int, int, int]:
        """``(offset, width, value)`` of the first frame's sequence number field."""
        with open(self.path, "rb") as f:
            head = f.read(self.header_bytes)
        start = head.index(b",") + 1
        stop = head.index(b",", start)
        return start, stop - start, int(head[start:stop])


def _send_all(sock: socket.socket, buffers: list) -> None:
    """Send every buffer, in order, in as few ``sendmsg`` calls as the kernel allows."""
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        sent = sock.sendmsg(views[:1024])
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if sent:
            views[0] = views[0][sent:]


def _close(sock: Optional[socket.socket]) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class SimulatorProcess:
    """A simulator in a process of its own (``stem-explorer simulate merlin``) on free
    ports of 127.0.0.1, for tests, benchmarks and demos that need the detector
    outside the receiver's process. A context manager; :meth:`kill` ends it abruptly
    (a detector that goes away)."""

    def __init__(self, path, *, nav_shape=None, fps: Optional[float] = None, start_on_connect: bool = False,
                 drop_frames=(), timeout: float = 60.0):
        command = [sys.executable, "-m", "stem_explorer", "simulate", "merlin", os.fspath(path),
                   "--control-port", "0", "--data-port", "0"]
        if nav_shape is not None:
            command += ["--nav-shape", *map(str, nav_shape)]
        if fps is not None:
            command += ["--fps", str(fps)]
        if start_on_connect:
            command.append("--start-on-connect")
        if drop_frames:
            command += ["--drop-frames", *map(str, drop_frames)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = _readline(self.proc, timeout)
        found = re.search(r"control port (\d+) data port (\d+)", line)
        if not found:
            self.stop()
            raise DataSetError(f"the Merlin simulator process did not start: {line.strip() or self.proc.stderr.read()}")
        self.control_port, self.data_port = int(found[1]), int(found[2])

    @property
    def ports(self) -> dict:
        """``control_port`` and ``data_port``, as :func:`~stem_explorer.live.merlin` takes them."""
        return {"control_port": self.control_port, "data_port": self.data_port}

    def kill(self) -> None:
        """End the process at once (SIGKILL): its connections drop."""
        if self.proc.poll() is None:
            self.proc.kill()

    def stop(self) -> None:
        """End the process and wait for it."""
        self.kill()
        self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()

    def __enter__(self) -> "SimulatorProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _readline(proc: subprocess.Popen, timeout: float) -> str:
    """The first line ``proc`` prints, or '' when it prints none within ``timeout`` s."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""

"""The framing of the MerlinEM TCP interface (Quantum Detectors), shared by the
receiver (:mod:`.merlin`) and the simulator (:mod:`.simulator`).

Every message on both ports is ``MPX,`` + a ten-digit decimal length + ``,`` + the
payload. The length counts the payload *plus one*: the comma after the digits is
part of the counted message, so the fixed 15-byte prefix is followed by
``length - 1`` bytes (``MPX,0000000021,CMD,STARTACQUISITION``: 20 payload bytes).

Control port (6341 by default), one request and one response at a time:

* requests ``GET,<NAME>``, ``SET,<NAME>,<VALUE>``, ``CMD,<NAME>``;
* responses ``GET,<NAME>,<VALUE>,<CODE>``, ``SET,<NAME>,<CODE>``,
  ``CMD,<NAME>,<CODE>``, where the code is 0 (done), 1 (busy), 2 (not recognised)
  or 3 (value out of range).

Data port (6342 by default): for each acquisition the acquisition header
(``HDR,`` + the lines of the ``.hdr`` file, ``Key (unit):<TAB>value``, up to
``End``), then one message per frame whose payload is the frame's ``MQ1`` header
and pixels, byte for byte as a ``.mib`` file stores them.
"""

from __future__ import annotations

import socket
from typing import Optional

from ..errors import AcquisitionError

#: ``MPX,`` + ten digits + ``,``
PREFIX_BYTES = 15
MAGIC = b"MPX,"
#: Control messages and acquisition headers are text; anything longer is not one.
MAX_TEXT_BYTES = 1 << 20

#: Response codes of the control port.
CODES = {0: "done", 1: "busy", 2: "command not recognised", 3: "value out of range"}
OK, BUSY, UNKNOWN, OUT_OF_RANGE = 0, 1, 2, 3


def prefix(payload_bytes: int) -> bytes:
    """The 15-byte prefix of a message whose payload is ``payload_bytes`` long."""
    return b"MPX,%010d," % (payload_bytes + 1)


def message(payload: bytes) -> bytes:
    """A whole message: prefix and payload."""
    return prefix(len(payload)) + payload


def payload_length(raw: bytes, where: str) -> int:
    """The payload length stated by the 15-byte prefix ``raw``; an
    :class:`AcquisitionError` naming ``where`` when it is not a message prefix."""
    digits = raw[len(MAGIC) : PREFIX_BYTES - 1]
    if len(raw) != PREFIX_BYTES or not raw.startswith(MAGIC) or raw[-1:] != b"," or not digits.isdigit():
        raise AcquisitionError(
            f"{where} sent {bytes(raw[:PREFIX_BYTES])!r} where a MerlinEM message starts "
            f"('MPX,' + ten digits + ','): the peer is not a Merlin detector or the stream "
            f"lost its framing; check the host and port"
        )
    length = int(digits)
    if length < 1:
        raise AcquisitionError(f"{where} sent a message of length {length}; the stream is damaged")
    return length - 1


def recv_exact(sock: socket.socket, n: int, where: str, into: Optional[memoryview] = None) -> memoryview:
    """Exactly ``n`` bytes from ``sock`` (into ``into`` when given); an
    :class:`AcquisitionError` when the peer closes first."""
    buffer = into if into is not None else memoryview(bytearray(n))
    got = 0
    while got < n:
        k = sock.recv_into(buffer[got:n], n - got)
        if k == 0:
            raise AcquisitionError(
                f"{where} closed the connection after {got} of the {n} bytes of a message"
            )
        got += k
    return buffer[:n]


def read_text_message(sock: socket.socket, where: str) -> str:
    """One whole text message (a control response or an acquisition header)."""
    length = payload_length(bytes(recv_exact(sock, PREFIX_BYTES, where)), where)
    if length > MAX_TEXT_BYTES:
        raise AcquisitionError(
            f"{where} announced a {length}-byte message where a text message (at most "
            f"{MAX_TEXT_BYTES} bytes) was expected; the peer is not a Merlin control port "
            f"or sent frames before their acquisition header"
        )
    return bytes(recv_exact(sock, length, where)).decode("latin-1")


# -- control commands -------------------------------------------------------------------------
def request(kind: str, name: str, value=None) -> bytes:
    """A control request: ``kind`` GET, SET or CMD."""
    text = f"{kind},{name}" if value is None else f"{kind},{name},{value}"
    return message(text.encode("ascii"))


def parse_request(payload: str) -> tuple[str, str, Optional[str]]:
    """``(kind, NAME, value or None)`` of a request payload."""
    kind, _, rest = payload.partition(",")
    name, _, value = rest.partition(",")
    return kind.strip().upper(), name.strip().upper(), (value.strip() if value else None)


def response(kind: str, name: str, code: int, value=None) -> bytes:
    """A control response (GET responses carry the value before the code)."""
    text = f"{kind},{name},{value},{code}" if kind == "GET" else f"{kind},{name},{code}"
    return message(text.encode("ascii"))


def parse_response(payload: str, kind: str, name: str, where: str) -> Optional[str]:
    """The value of a GET response (None for SET/CMD); an :class:`AcquisitionError`
    when the response does not answer ``kind,name`` or its code is not 0."""
    fields = [f.strip() for f in payload.split(",")]
    expected = 4 if kind == "GET" else 3
    if len(fields) != expected or fields[0].upper() != kind or fields[1].upper() != name or not fields[-1].isdigit():
        raise AcquisitionError(
            f"{where} answered {payload!r} to {kind},{name}: not a MerlinEM response; "
            f"check that the control port is a Merlin's"
        )
    code = int(fields[-1])
    if code != OK:
        raise AcquisitionError(
            f"{where} refused {kind},{name}: {CODES.get(code, f'code {code}')}; check "
            f"the detector's state and the value"
        )
    return fields[2] if kind == "GET" else None

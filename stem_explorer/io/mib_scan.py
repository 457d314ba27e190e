"""Scan shape of a Merlin acquisition from its frames' time stamps.

With one trigger per frame (a pixel trigger) or no ``.hdr`` at all, nothing in a
``.mib`` file states the scan's size. The frames of a raster scan come one dwell
period apart along a line, and the beam's flyback to the start of the next line adds
a pause: HyperSpy's reader (rosettasciio's ``quantumdetector``) takes the scan width
from the first interval above the mean. Here a width ``w`` is accepted only when the
pause follows exactly every ``w``-th frame and each of those intervals exceeds every
other interval by more than the others' spread (and by at least a microsecond, the
resolution of the older time stamp field), so timing jitter alone never passes for a
scan; otherwise the frames stay a stack and the reason is recorded.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["frame_times", "scan_from_times"]

#: the smallest flyback pause believed (ns): the older time stamp field counts in us
_MIN_EXCESS_NS = 1_000
#: where the (microsecond) time stamp sits among the comma-separated header fields
_TIME_FIELD = 9
_EXTENSION = b"MQ1A"


def frame_times(headers: np.ndarray) -> Optional[np.ndarray]:
    """The frames' times (``datetime64[ns]``) from their header bytes, one row per
    frame: the ``MQ1A`` extension's nanosecond stamp where there is one, else the
    microsecond stamp. None when the stamp is not at one place in every header or
    does not parse."""
    fields = headers[0].tobytes().split(b"\0", 1)[0].split(b",")
    index = fields.index(_EXTENSION) + 1 if _EXTENSION in fields else _TIME_FIELD
    if index >= len(fields) - 1 or not fields[index]:
        return None
    start = sum(len(f) + 1 for f in fields[:index])
    stop = start + len(fields[index])
    comma = ord(",")
    if not ((headers[:, start - 1] == comma).all() and (headers[:, stop] == comma).all()):
        return None  # the fields before it change width between frames
    raw = np.ascontiguousarray(headers[:, start:stop]).view(f"S{stop - start}")[:, 0]
    try:
        return np.char.rstrip(np.char.decode(raw, "ascii"), "Z").astype("datetime64[ns]")
    except (UnicodeDecodeError, ValueError):
        return None


def scan_from_times(times: Optional[np.ndarray]) -> tuple[Optional[tuple[int, int]], str]:
    """``((rows, width), source)`` when ``times`` show a line flyback after every
    ``width`` frames and the frames fill whole lines; else ``(None, why not)``."""
    if times is None:
        return None, "the frame time stamps cannot be read"
    n = len(times)
    steps = np.diff(times).astype(np.int64)
    if n < 4 or (steps <= 0).any():
        return None, "no line flyback gap in the frame time stamps (too few, or not increasing)"
    width = _flyback_width(steps)
    if width is None:
        return None, "no line flyback gap in the frame time stamps"
    if n % width:
        return None, (
            f"the frame time stamps show lines of {width} frames, but the {n} frames "
            f"are not whole lines (an interrupted scan?)"
        )
    return (n // width, width), f"frame time stamps (line flyback gap after every {width} frames)"


def _flyback_width(steps: np.ndarray) -> Optional[int]:
    """The width ``w`` when the intervals after every ``w``-th frame (and only those)
    stand out from all others, else None."""
    # the candidate: the first interval nearer the longest than the typical one
    middle = (float(np.median(steps)) + float(steps.max())) / 2
    width = int(np.argmax(steps >= middle)) + 1
    if width < 2 or 2 * width > len(steps) + 1:
        return None  # a line of one frame, or fewer than two lines
    is_gap = np.zeros(len(steps), bool)
    is_gap[width - 1 :: width] = True
    gaps, others = steps[is_gap], steps[~is_gap]
    if not len(others):
        return None
    spread = int(others.max() - others.min())
    excess = int(gaps.min() - others.max())
    return width if excess > max(spread, _MIN_EXCESS_NS) else None


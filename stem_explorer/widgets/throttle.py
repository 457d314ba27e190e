"""Rate limiting for live updates: the newest value wins, at most ``max_rate`` sends a second."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Optional

_NOTHING = object()


class Throttle:
    """Deliver values to ``send`` no more than ``max_rate`` times a second.

    :meth:`submit` stores the value; if the last send was long enough ago it is sent at
    once (in the caller's thread), otherwise a timer sends the newest value stored when
    the interval has passed. Intermediate values are dropped, never queued, so a fast
    producer (a job merging partitions) cannot flood a slow consumer (the websocket to
    the browser). Sends never overlap. Exceptions from ``send`` go to ``on_error``.
    """

    def __init__(
        self,
        send: Callable[[Any], None],
        max_rate: float = 30.0,
        on_error: Optional[Callable[[BaseException], None]] = None,
    ):
        if not max_rate > 0:
            raise ValueError(f"max_rate must be positive, got {max_rate!r}")
        self._send = send
        self._interval = 1.0 / max_rate
        self._on_error = on_error
        self._lock = threading.Lock()
        self._sending = threading.Lock()
        self._pending: Any = _NOTHING
        self._last = -float("inf")
        self._timer: Optional[threading.Timer] = None
        self.sent = 0

    def submit(self, value: Any) -> None:
        """Offer ``value``; it (or a newer value) is sent within one interval."""
        with self._lock:
            self._pending = value
            if self._timer is not None:
                return
            wait = self._last + self._interval - time.perf_counter()
            if wait > 0:
                self._timer = threading.Timer(wait, self._fire)
                self._timer.daemon = True
                self._timer.start()
                return
        self._deliver()

    def flush(self) -> None:
        """Send the pending value now, if there is one."""
        self._deliver()

    def drop(self) -> None:
        """Forget the pending value (e.g. it belongs to a superseded job)."""
        with self._lock:
            self._pending = _NOTHING

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
        self._deliver()

    def _deliver(self) -> None:
        with self._sending:
            with self._lock:
                value, self._pending = self._pending, _NOTHING
                if value is _NOTHING:
                    return
                self._last = time.perf_counter()
            try:
                self._send(value)
                self.sent += 1
            except Exception as exc:  # a view must not die with a background thread
                if self._on_error is None:
                    raise
                self._on_error(exc)

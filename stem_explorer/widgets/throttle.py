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
    A ``submit`` made by ``send`` itself (a view that changes its zoom while it sends)
    is sent by a timer after the current send, never re-entered in the same thread.
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
        self._sender: Optional[int] = None  # thread running ``send`` now
        self.sent = 0

    def submit(self, value: Any) -> None:
        """Offer ``value``; it (or a newer value) is sent within one interval."""
        with self._lock:
            self._pending = value
            if self._timer is not None:
                return
            wait = self._last + self._interval - time.perf_counter()
            # from inside ``send`` the lock is held by this very thread: delivering now
            # would deadlock on it (it did when a slow send outlasted the interval)
            if wait > 0 or self._sender == threading.get_ident():
                self._timer = threading.Timer(max(wait, 0.0), self._fire)
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
            self._sender = threading.get_ident()
            try:
                self._send(value)
                self.sent += 1
            except Exception as exc:  # a view must not die with a background thread
                if self._on_error is None:
                    raise
                self._on_error(exc)
            finally:
                self._sender = None

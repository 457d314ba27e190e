"""A place for one job at a time: a new start cancels the one before, and only the
latest start's partial results are delivered (never a superseded job's over a newer
result, including partials that arrive before ``Session.run`` returns, from a preview
computed in the kernel)."""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

from ..errors import JobCancelledError


class JobSlot:
    """Runs jobs one at a time, newest wins.

    ``on_error(exc)`` gets what a start or the latest job raised (a cancelled job is
    no error). Callbacks run in the job's threads, not under the slot's lock, so they
    may start the slot's next job.
    """

    def __init__(self, on_error: Callable[[BaseException], None]):
        self._on_error = on_error
        self._lock = threading.Lock()
        self._token: Optional[object] = None
        self._handled: Optional[threading.Event] = None
        self.job = None

    def start(self, session, analysis, on_partial: Callable, on_done: Callable) -> Optional[object]:
        """Cancel the running job and start ``analysis`` on ``session``; ``on_partial(progress)``
        for each partial result, ``on_done(job, results)`` at the end. Returns the job,
        or None when it could not start (``on_error`` got why)."""
        with self._lock:
            if self.job is not None:
                self.job.cancel()  # delivers nothing more once this returns
            self._token = token = object()

            def deliver(progress) -> None:
                if self._token is token:
                    on_partial(progress)

            try:
                job = session.run(analysis, on_partial=deliver)
            except Exception as exc:
                self.job, self._handled = None, None
                self._on_error(exc)
                return None
            self.job, self._handled = job, threading.Event()
            handled = self._handled
        threading.Thread(target=self._watch, args=(job, token, on_done, handled), daemon=True,
                         name="stem-explorer-job-watch").start()
        return job

    def cancel(self) -> None:
        """Cancel the running job; nothing of it is delivered any more."""
        with self._lock:
            job, self.job, self._token, self._handled = self.job, None, None, None
        if job is not None:
            job.cancel()

    def is_current(self, job) -> bool:
        """Whether ``job`` is the slot's latest."""
        return job is not None and job is self.job

    def wait(self, deadline: float) -> bool:
        """Wait (until ``time.monotonic()`` reaches ``deadline``) for the latest job to be
        handled; True once it is, or when there is none."""
        with self._lock:
            handled = self._handled
        return handled is None or handled.wait(max(0.0, deadline - time.monotonic()))

    def _watch(self, job, token, on_done, handled: threading.Event) -> None:
        try:
            results = job.result()
        except JobCancelledError:
            return
        except Exception as exc:
            if self._token is token:
                self._on_error(exc)
        else:
            if self._token is token:
                try:
                    on_done(job, results)
                except Exception as exc:
                    self._on_error(exc)
        finally:
            handled.set()

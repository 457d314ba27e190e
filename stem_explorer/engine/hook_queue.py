"""One job's hook events, delivered in order on a thread of their own.

Events come from several threads: the job's (submit, partitions, the end), the
client's event loop (placements reported by the scheduler) and the caller's
(``cancel()``). Each thread only queues the event; one daemon thread per job calls
the hooks, in the order the events were queued, outside every lock of the job. So a
slow hook delays neither the merging of partitions nor dask's event loop, and a hook
may call anything, the job's own methods included. The thread starts with the first
event a hook listens to (a job without hooks starts none) and ends after
:meth:`HookQueue.close`.
"""

from __future__ import annotations

import queue
import threading
from typing import Optional

from .hooks import Hooks

_CLOSE = object()


class HookQueue:
    """Queue events for ``hooks`` of job ``job_id`` on ``input`` (see the module notes)."""

    def __init__(self, hooks: Hooks, job_id: int, input: Optional[str] = None):
        self.hooks = hooks
        self._job_id = job_id
        self._input = input
        self._queue: "queue.SimpleQueue" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        self._delivered = threading.Event()  # every event up to close() was delivered

    def wants(self, event: str) -> bool:
        """Whether a hook listens to ``event`` (build costly payloads only then)."""
        return not self._closed and self.hooks.wants(event)

    def emit(self, event: str, **data) -> None:
        """Queue ``event`` with its payload; dropped after :meth:`close`."""
        if not self.hooks.wants(event):
            return
        with self._lock:
            if self._closed:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"stem-explorer-hooks{self._job_id}", daemon=True)
                self._thread.start()
            self._queue.put((event, data))

    def close(self) -> None:
        """No more events: the thread ends once the queued ones are delivered."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._thread is None:
                self._delivered.set()
            else:
                self._queue.put(_CLOSE)

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until :meth:`close` was called and every event before it delivered
        (returns at once on the delivering thread itself); False on timeout."""
        if threading.current_thread() is self._thread:
            return True
        return self._delivered.wait(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _CLOSE:
                self._delivered.set()
                return
            event, data = item
            self.hooks.emit(event, job_id=self._job_id, input=self._input, **data)

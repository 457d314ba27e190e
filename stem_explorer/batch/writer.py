"""The batch's one writer of results files, with a group commit of their folder.

Every results file of a batch is written by one thread, one at a time (HDF5
serialises writes anyway; a full disk fails one save, in one place, and the batch
stops before the next). Each save is atomic and syncs its data before its rename
(``stem_explorer._atomic``); what the writer shares is the folder's ``fsync``
that makes the new names durable: the saves queued while one was written are
written in a row and the folder is synced once after them. A save's future is done
only after that sync, and the batch records an input done (its row, its
``on_result`` hooks) only then, so an input recorded done has its results file on
disk whatever happens next; a crash before the sync loses at most renames of files
not recorded yet, which a re-run computes again.

The writer looks once, as it starts, for temporaries that killed saves left in the
output folder (``_atomic.stale_temporaries_swept``), instead of once per file: each
look reads the whole folder.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from contextlib import nullcontext
from typing import Callable

from .._atomic import folder_syncs_deferred, stale_temporaries_swept
from ..errors import SaveError


class ResultsWriter:
    """A thread that runs saves in turn; :meth:`submit` returns a future done once
    the save is on disk, its file's name included. With ``folder`` (where the saves
    go) the thread sweeps it of stale temporaries once, and the saves skip their own
    look for them."""

    def __init__(self, name: str = "stem-explorer-batch-writer", folder=None):
        self._folder = folder
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, save: Callable[[], object]) -> Future:
        """Queue ``save()`` (an atomic write); its future has what it returned, or its error."""
        if self._closed:
            raise RuntimeError("the results writer is closed")
        future: Future = Future()
        self._queue.put((save, future))
        return future

    def close(self) -> None:
        """Finish the saves queued so far; none starts after."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        with stale_temporaries_swept(self._folder) if self._folder is not None else nullcontext():
            self._loop()

    def _loop(self) -> None:
        while True:
            group = [self._queue.get()]
            while True:  # whatever queued up meanwhile shares the folder's fsync
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._write([item for item in group if item is not None])
            if None in group:
                return

    @staticmethod
    def _write(group: list) -> None:
        saved = []
        try:
            with folder_syncs_deferred():
                for save, future in group:
                    if not future.set_running_or_notify_cancel():
                        continue
                    try:
                        saved.append((future, save()))
                    except BaseException as exc:  # the saver's error is the input's
                        future.set_exception(exc)
        except SaveError as exc:  # the folder could not be synced: none of them is sure
            for future, _value in saved:
                future.set_exception(exc)
            return
        for future, value in saved:  # the names are durable now
            future.set_result(value)

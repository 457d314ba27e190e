"""The ingestion lock of an HDFS folder: a lease file that names its owner.

HDFS has no advisory locks, but creating a file that must not exist is atomic on the
NameNode, and so is a rename onto a name that must not exist. The owner creates
``.ingest.lock`` holding its record (host, PID, start time, token: see
:mod:`stem_explorer.io.ingest_lock`) and refreshes its modification time every
:data:`HEARTBEAT_S` seconds from a thread. A second ingestion finding the file takes it
over only when it is stale: its owner ran on this host and is gone (even after
SIGKILL: the PID and start time tell), or, for an owner on another host, it was not
refreshed for :data:`EXPIRY_S` seconds (hosts' clocks must agree to well within
that, as NTP keeps them). The takeover renames the stale file to a name made of the
stale owner's token, which only one contender can do, and checks that it moved the
record it judged: one that moved a lease taken meanwhile puts it back.

The design follows Apache Storm's HDFS spout lock (atomic create, heartbeat, expiry).
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional

from ...errors import DataSetError, DataSetNotFoundError
from ..ingest_lock import LOCK_NAME, busy_error, owner_alive, owner_record
from .webhdfs import AlreadyExistsError

HEARTBEAT_S = 15.0
EXPIRY_S = 120.0


class HdfsLease:
    """The ingestion lock of the folder of ``store`` (an :class:`HdfsStore`)."""

    def __init__(self, store):
        self.store = store
        self.path = store.path(LOCK_NAME)

    def owner(self) -> Optional[dict]:
        """The current owner's record (None when free or unreadable)."""
        try:
            return json.loads(self.store.client.read_all(self.path))
        except (DataSetError, ValueError):
            return None

    def _age(self) -> Optional[float]:
        """Seconds since the lease was created or refreshed; None when it is gone."""
        try:
            return time.time() - self.store.client.status(self.path)["modificationTime"] / 1000
        except DataSetNotFoundError:
            return None

    def _create(self, token: str) -> bool:
        data = json.dumps(owner_record(token)).encode()
        try:
            self.store.client.create(self.path, len(data), [data], overwrite=False)
        except AlreadyExistsError:
            return False
        return True

    def _take_over(self, owner: dict) -> bool:
        """Move the stale lease of ``owner`` aside; False when another contender did."""
        aside = f"{self.path}.stale-{owner.get('token')}"
        try:
            self.store.client.rename(self.path, aside)
        except DataSetError:  # gone, or the aside name exists: someone else is taking over
            return False
        try:
            moved = json.loads(self.store.client.read_all(aside))
        except (DataSetError, ValueError):
            moved = None
        if moved is not None and moved.get("token") != owner.get("token"):
            self.store.client.rename(aside, self.path)  # a lease taken since we looked: give it back
            raise busy_error(self.store, moved)
        self.store.client.delete(aside)
        return True

    def _acquire(self, token: str) -> None:
        for _attempt in range(5):
            if self._create(token):
                return
            owner, age = self.owner(), self._age()
            if age is None:
                continue  # released meanwhile
            alive = owner_alive(owner) if owner else None
            if alive or (alive is None and age < EXPIRY_S):
                raise busy_error(self.store, owner)
            self._take_over(owner or {})
        raise busy_error(self.store, self.owner())

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                self.store.client.touch(self.path, time.time())
            except DataSetError:
                pass  # a missed beat; the lease lasts EXPIRY_S

    @contextmanager
    def hold(self, token: str) -> Iterator[None]:
        """Own the folder for the ``with`` block, or raise the "being written" error."""
        self._acquire(token)
        stop = threading.Event()
        beat = threading.Thread(target=self._beat, args=(stop,), name="ingest-lease", daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()
            if (self.owner() or {}).get("token") == token:
                self.store.client.delete(self.path)

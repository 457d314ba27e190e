"""One ingestion per destination at a time: who holds a destination, whether that
owner still lives, and the lock of a local (or shared) folder.

An ingestion takes its destination's lock before it looks at what the folder holds
and keeps it until it has published (or failed). The lock names its owner (host,
PID, start time and a token for this run), which is what an error shows a second
ingestion, and what each task of the owner compares before it renames a file into
place: a task of a run that lost its destination (its client was killed and another
ingestion took over) writes nothing more.

A folder is locked with :mod:`filelock` (``flock``: the kernel drops the lock when the
owner dies, even by SIGKILL, so a dead owner's lock is never stale; it works across
hosts on NFS). Its lock file ``.ingest.lock`` stays in the folder (filelock keeps the
inode so that contenders lock the same file); the owner record beside it,
``.ingest.owner``, is removed on release. HDFS has no such lock: see
:mod:`stem_explorer.io.hdfs.lease`.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from contextlib import contextmanager
from typing import Iterator, Optional

import psutil

from ..errors import DataSetError
from .write_errors import write_error, writing

LOCK_NAME = ".ingest.lock"
OWNER_NAME = ".ingest.owner"


def owner_record(token: str) -> dict:
    """This process as a lock owner: host, PID, the process's start time (so a reused
    PID is not mistaken for the owner), the boot time and ``token``."""
    me = psutil.Process()
    return {"token": token, "host": socket.gethostname(), "pid": os.getpid(), "started": me.create_time(),
            "boot": psutil.boot_time(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}


def owner_alive(owner: dict) -> Optional[bool]:
    """Whether the process of ``owner`` still runs: None when it ran on another host
    (this host cannot tell)."""
    if owner.get("host") != socket.gethostname():
        return None
    if owner.get("boot") != psutil.boot_time():
        return False  # the host restarted since
    try:
        return psutil.Process(int(owner["pid"])).create_time() == owner.get("started")
    except (psutil.NoSuchProcess, KeyError, TypeError, ValueError):
        return False


def busy_error(dest, owner: Optional[dict]) -> DataSetError:
    """The error of an ingestion that finds ``dest`` locked by ``owner``."""
    who = (f"host {owner.get('host')}, pid {owner.get('pid')}, since {owner.get('since')}"
           if owner else "its owner is starting")
    return DataSetError(
        f"{dest} is being written by another ingestion ({who}); wait until it finishes or stop it, "
        f"then run this ingestion again (it resumes what is complete)"
    )


def new_token() -> str:
    return uuid.uuid4().hex


class FolderLock:
    """The ingestion lock of local folder ``root`` (see the module's description)."""

    def __init__(self, root: str):
        self.root = root

    def owner(self) -> Optional[dict]:
        """The current owner's record (None when free or unreadable)."""
        try:
            with open(os.path.join(self.root, OWNER_NAME), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    @contextmanager
    def hold(self, token: str) -> Iterator[None]:
        """Own the folder for the ``with`` block, or raise :func:`busy_error`'s error."""
        from filelock import FileLock, Timeout

        lock_path = os.path.join(self.root, LOCK_NAME)
        lock = FileLock(lock_path, timeout=0)
        try:
            lock.acquire()
        except Timeout:  # before OSError: filelock's Timeout is a TimeoutError
            raise busy_error(self.root, self.owner()) from None
        except OSError as exc:
            raise write_error(lock_path, exc) from None
        owner_path = os.path.join(self.root, OWNER_NAME)
        staged = f"{owner_path}.{token}"  # a name of our own, renamed over a dead owner's record
        try:
            with writing(staged):
                with open(staged, "w", encoding="utf-8") as f:
                    json.dump(owner_record(token), f)
                os.replace(staged, owner_path)
            yield
        finally:
            for path in (staged, owner_path):
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
            lock.release()

"""A local or shared folder as an ingestion target (the same operations as
:class:`~stem_explorer.io.hdfs.HdfsStore`). Failed writes raise the package's error
naming the file and the fix (:mod:`.write_errors`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Iterable, Optional

from ..errors import DataSetError
from .hdfs.config import is_hdfs_url
from .ingest_lock import FolderLock
from .store_common import parse_json, paths_overlap
from .write_errors import writing


class LocalStore:
    """Files of one folder (``path``), addressed by name."""

    def __init__(self, path):
        self.root = os.path.abspath(os.fspath(path))

    def __str__(self) -> str:
        return self.root

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def check_destination(self) -> None:
        """Raise unless the folder exists or can be created (it is not a file)."""
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise DataSetError(f"{self.root} is a file; pass a folder (new, or holding a data set) as the destination")

    def overlaps(self, source: Optional[str]) -> bool:
        """Whether the data at path ``source`` is this folder, inside it, or holds it
        (symbolic links resolved)."""
        if not source or is_hdfs_url(source):
            return False
        return paths_overlap(os.path.realpath(source), os.path.realpath(self.root))

    def min_block_bytes(self) -> int:
        return 0  # files of a folder have no blocks

    def list(self, sub: str = "") -> dict:
        """``{name: size}`` of the files in the folder (or its subfolder ``sub``)."""
        folder = self.path(sub) if sub else self.root
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return {}
        return {e.name: e.stat().st_size for e in entries if e.is_file()}

    def names(self, sub: str = "") -> list:
        """Names of every entry (files and folders) of the folder or its ``sub``."""
        try:
            return os.listdir(self.path(sub) if sub else self.root)
        except FileNotFoundError:
            return []

    @staticmethod
    def _id(stat: os.stat_result) -> int:
        return hash((stat.st_ino, stat.st_mtime_ns))

    def file_id(self, name: str) -> int:
        """Changes whenever the file is written anew (inode and modification time)."""
        return self._id(os.stat(self.path(name)))

    def file_ids(self) -> dict:
        """``{name: file_id}`` of the files in the folder, in one listing."""
        try:
            return {e.name: self._id(e.stat()) for e in os.scandir(self.root) if e.is_file()}
        except FileNotFoundError:
            return {}

    def makedirs(self, sub: str = "") -> None:
        target = self.path(sub) if sub else self.root
        with writing(target):
            os.makedirs(target, exist_ok=True)

    def create(self, name: str, length: int, chunks: Iterable, **_hdfs_options) -> None:
        """Write file ``name`` from ``chunks``, synced to disk; block options are HDFS's."""
        path = self.path(name)
        with writing(path):
            with open(path, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        if os.path.getsize(path) != length:
            raise DataSetError(f"{path}: wrote {os.path.getsize(path)} bytes, expected {length}")

    def sha256(self, name: str, length: int) -> str:
        """sha256 of the file as stored (``length`` is known from the listing here)."""
        h = hashlib.sha256()
        with open(self.path(name), "rb") as f:
            while chunk := f.read(8 * 2**20):
                h.update(chunk)
        return h.hexdigest()

    def rename(self, src: str, dst: str) -> None:
        with writing(self.path(dst)):
            os.replace(self.path(src), self.path(dst))

    def remove(self, name: str) -> None:
        """Delete a file or folder (recursively); nothing when it does not exist."""
        target = self.path(name)
        with writing(target):
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            elif os.path.lexists(target):
                os.remove(target)

    def read_json(self, name: str) -> Optional[dict]:
        try:
            with open(self.path(name), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        return parse_json(data, self.path(name))

    def write_json(self, name: str, doc: dict, staging: str) -> None:
        """Publish ``doc`` as ``name`` atomically: written and synced as ``staging``
        (a name of the caller's own), then renamed."""
        data = (json.dumps(doc, indent=1) + "\n").encode()
        self.create(staging, len(data), [data])
        self.rename(staging, name)

    def lock(self, token: str):
        """Context manager owning the folder for one ingestion (:class:`FolderLock`)."""
        self.makedirs()
        return FolderLock(self.root).hold(token)

    def lock_owner(self) -> Optional[dict]:
        return FolderLock(self.root).owner()

"""Watched folders: the data files that appear in a folder, each once it is complete.

A file is complete when the format says so, and its size and modification time
(with its companions') have not changed for ``settle_s`` seconds: a detector or a
copy still writing it changes them. The format's own marker: an ARINA / EIGER
``*_master.h5`` is complete once every data file its ``/entry/data`` links name
exists (the master is written first). Polling, not inotify: acquisition folders are
often network shares, where inotify sees nothing.
"""

from __future__ import annotations

import glob
import os
import time
from pathlib import Path
from typing import Optional

from ..errors import DataSetNotFoundError, StemExplorerError
from .inputs import fingerprint, folder_files


def master_links_present(path: Path) -> bool:
    """Whether every external link under ``/entry/data`` of the HDF5 file ``path``
    points at a file that exists (True for a file without such links)."""
    if not path.name.lower().endswith("_master.h5"):
        return True
    import h5py

    try:
        with h5py.File(path, "r") as f:
            group = f.get("entry/data")
            if group is None:
                return True
            links = [group.get(name, getlink=True) for name in group]
    except (OSError, KeyError):  # still being written
        return False
    targets = [link.filename for link in links if isinstance(link, h5py.ExternalLink)]
    return all((path.parent / target).exists() for target in targets)


def _state(path: Path) -> tuple:
    """What must stop changing: the fingerprints of the file and its companions
    (files of the same stem: an ARINA master's data files, a .raw's .xml)."""
    stem = path.name.split(".")[0].removesuffix("_master")
    companions = sorted(
        p for p in path.parent.glob(glob.escape(stem) + "*")
        if p != path and (p.name.split(".")[0] == stem or p.name.startswith(f"{stem}_data_"))
    )
    return tuple(tuple(fingerprint(p).values()) for p in [path, *companions])


class FolderWatcher:
    """The new complete data files of ``folders``; :meth:`poll` returns those that
    became complete since the last call (each path once).

    Parameters
    ----------
    folders : list of Path
        The folders to watch (their files directly inside, as a batch reads a folder).
    known : iterable of Path
        Files already handled (the batch's initial inputs).
    settle_s : float
        Seconds a file's size and modification time must stay the same.
    exclude : iterable of Path
        Paths never reported (the batch's output folder).
    """

    def __init__(self, folders, known=(), *, settle_s: float = 2.0, exclude=()):
        self.folders = [Path(f) for f in folders]
        self.settle_s = float(settle_s)
        self.exclude = {Path(os.path.abspath(p)) for p in exclude}
        self._reported = set(known)
        self._seen: dict[Path, tuple] = {}  # path -> (state, when that state was first seen)

    def poll(self, now: Optional[float] = None) -> list[Path]:
        """The files that became complete since the last call, by name.

        Raises
        ------
        DataSetNotFoundError
            A watched folder is gone (removed, renamed or unmounted).
        """
        now = time.monotonic() if now is None else now
        ready = []
        for folder in self.folders:
            try:
                if not folder.is_dir():
                    raise DataSetNotFoundError(str(folder))
                files = folder_files(folder, self.exclude)
            except DataSetNotFoundError:
                raise DataSetNotFoundError(
                    f"the watched folder {str(folder)!r} disappeared (removed, renamed or unmounted); "
                    f"the files processed so far are kept: restore the folder and run the batch again to go on"
                ) from None
            for path in files:
                if path not in self._reported and self._complete(path, now):
                    ready.append(path)
                    self._reported.add(path)
                    self._seen.pop(path, None)
        return ready

    def _complete(self, path: Path, now: float) -> bool:
        try:
            state = _state(path)
        except StemExplorerError:  # removed between the listing and now
            self._seen.pop(path, None)
            return False
        previous = self._seen.get(path)
        if previous is None or previous[0] != state:
            self._seen[path] = (state, now)
            return False
        return now - previous[1] >= self.settle_s and master_links_present(path)

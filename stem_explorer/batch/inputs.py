"""A batch's inputs: files, folders and glob patterns expanded to data sets, each
with the name of its results file and a fingerprint (size, modification time).

A folder that a reader recognises as one data set (a zarr store, a raw partition
folder) is one input; any other folder stands for the data files directly inside it
(files with a registered reader's suffix, not hidden ones). Companions are left out:
sidecars (``.hdr``, ``.json``, ``.xml``, ``.txt``: the data file beside one is the
input; name a sidecar explicitly to open through it), and the
``*_data_NNNNNN.h5`` files of an ARINA / EIGER ``*_master.h5``.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import DataSetError, DataSetNotFoundError, FormatError
from ..io import find_reader, readers

#: suffixes of files that describe a data file rather than hold data
SIDECAR_SUFFIXES = (".hdr", ".json", ".xml", ".txt")
#: the data files an ARINA / EIGER master file links to
_MASTER_DATA = re.compile(r"^(?P<prefix>.+)_data_\d{6}\.h5$", re.IGNORECASE)
#: what a results file's name ends with
RESULTS_SUFFIX = ".results.h5"


@dataclass(frozen=True)
class BatchInput:
    """One input of a batch: the data set's path and its results file's name."""

    path: Path
    output_name: str

    @property
    def key(self) -> str:
        """The input as the summary and the hooks name it."""
        return str(self.path)


def expand(inputs: Iterable, exclude: Iterable = ()) -> list[Path]:
    """The data sets of ``inputs`` (paths, folders, glob patterns), absolute, in the
    order given (each folder's and pattern's matches sorted by name), each once.

    Raises
    ------
    DataSetNotFoundError
        A path that does not exist, or a pattern that matches nothing.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    excluded = {Path(os.path.abspath(p)) for p in exclude}
    found: dict[Path, None] = {}
    for item in inputs:
        text = os.path.expanduser(os.fspath(item))
        if glob.has_magic(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise DataSetNotFoundError(f"the pattern {text!r} matches no file; check it (patterns are glob patterns like 'scans/*.mib')")
            for match in matches:
                found.update(dict.fromkeys(_data_sets(Path(match), excluded)))
        elif not os.path.exists(text):
            raise DataSetNotFoundError(f"the input {text!r} does not exist; check the path (relative paths start at {os.getcwd()!r})")
        else:
            found.update(dict.fromkeys(_data_sets(Path(text), excluded)))
    return list(found)


def _data_sets(path: Path, excluded: set) -> list[Path]:
    path = Path(os.path.abspath(path))
    if path in excluded:
        return []
    if path.is_dir() and not _is_data_set(path):
        return folder_files(path, excluded)
    return [path]


def _is_data_set(folder: Path) -> bool:
    try:
        find_reader(str(folder))
    except (FormatError, OSError):
        return False
    return True


def _data_suffixes() -> tuple:
    return tuple(s for plugin in readers() for s in plugin.suffixes)


def folder_files(folder: Path, excluded: set = frozenset()) -> list[Path]:
    """The data files directly inside ``folder``, by name, without companions."""
    suffixes = _data_suffixes()
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        raise DataSetNotFoundError(f"the folder {str(folder)!r} is gone (removed or unmounted); check it") from None
    names = {e.name for e in entries}
    files = []
    for entry in entries:
        lower = entry.name.lower()
        path = Path(entry.path)
        if entry.name.startswith(".") or path in excluded or lower.endswith(RESULTS_SUFFIX):
            continue
        if not lower.endswith(suffixes) or _is_companion(entry.name, names):
            continue
        if entry.is_file() or (entry.is_dir() and _is_data_set(path)):
            files.append(path)
    return files


def _is_companion(name: str, names: set) -> bool:
    if os.path.splitext(name)[1].lower() in SIDECAR_SUFFIXES:
        return True
    master = _MASTER_DATA.match(name)
    return bool(master) and any(other.lower() == f"{master['prefix']}_master.h5".lower() for other in names)


def plain_name(path: Path) -> str:
    """The results file's name of ``path``: its name without the suffix, plus
    :data:`RESULTS_SUFFIX` (``scan_001.mib`` -> ``scan_001.results.h5``)."""
    stem = path.name
    for suffix in sorted(_data_suffixes(), key=len, reverse=True):
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem + RESULTS_SUFFIX


def unique_name(path: Path) -> str:
    """The name used when the plain name is shared: the plain name with the first 8
    hex digits of the SHA-256 of the absolute path (the same path, the same name)."""
    digest = hashlib.sha256(os.fsencode(str(path))).hexdigest()[:8]
    return plain_name(path)[: -len(RESULTS_SUFFIX)] + f"-{digest}" + RESULTS_SUFFIX


def name_outputs(paths: list[Path], taken=lambda name, path: False) -> list[BatchInput]:
    """Each path with its results file's name: the plain name, unless another input
    of the batch has the same plain name, or ``taken(name, path)`` says a results file
    of another input holds it; then :func:`unique_name` (deterministic: it depends
    on the path alone)."""
    counts: dict[str, int] = {}
    for path in paths:
        counts[plain_name(path)] = counts.get(plain_name(path), 0) + 1
    named = []
    for path in paths:
        name = plain_name(path)
        if counts[name] > 1 or taken(name, path):
            name = unique_name(path)
        named.append(BatchInput(path, name))
    return named


def fingerprint(path: Path) -> dict:
    """``{"size": bytes, "mtime_ns": newest modification}`` of a file, or of every
    file under a folder data set: a rewritten or touched input no longer matches."""
    try:
        info = os.stat(path)
        if not os.path.isdir(path):
            return {"size": info.st_size, "mtime_ns": info.st_mtime_ns}
        size, newest = 0, info.st_mtime_ns
        for root, _dirs, files in os.walk(path):
            for name in files:
                item = os.stat(os.path.join(root, name))
                size += item.st_size
                newest = max(newest, item.st_mtime_ns)
        return {"size": size, "mtime_ns": newest}
    except FileNotFoundError:
        raise DataSetNotFoundError(f"the input {str(path)!r} disappeared; check it") from None
    except OSError as exc:
        raise DataSetError(f"cannot examine the input {str(path)!r} ({exc.strerror}); check its permissions") from None

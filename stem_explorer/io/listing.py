"""Which entries of a folder are data sets: for opening a folder of scans at once and
for the explorer's file chooser.

A folder is either one data set (a reader of folders recognises it: the raw partition
format, a zarr store) or a folder *of* data sets. The listing names the entries whose
file name ends with a reader's suffix, and the sub-folders that are data sets; it
reads only the first bytes of sub-folders' marker files (the readers' ``sniff``), never
a data file.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataSetNotFoundError, DataSetPermissionError, FormatError
from .registry import find_reader, readers


def is_dataset_folder(path) -> bool:
    """Whether the folder ``path`` is itself one data set (a reader recognises it)."""
    try:
        find_reader(os.fspath(path))
    except (FormatError, OSError):  # OSError: a sub-folder this user may not enter
        return False
    return True


def dataset_suffixes() -> tuple:
    """The file name endings the registered readers claim (lower case)."""
    return tuple(sorted({s.lower() for plugin in readers() for s in plugin.suffixes}))


def list_datasets(folder) -> list:
    """The data sets in ``folder``, sorted by name: files with a reader's suffix and
    sub-folders a reader recognises (hidden entries are skipped).

    Raises
    ------
    DataSetNotFoundError
        ``folder`` does not exist or is not a folder.
    DataSetPermissionError
        This user may not list ``folder``.
    """
    return browse(folder)[1]


def browse(folder) -> tuple:
    """``(folders, data sets)`` in ``folder``: the paths of its sub-folders that are not
    data sets (to look into), and of its data sets (:func:`list_datasets`), each sorted
    by name. Raises as :func:`list_datasets`."""
    folder = Path(os.path.expanduser(os.fspath(folder)))
    if not folder.is_dir():
        raise DataSetNotFoundError(f"{str(folder)!r} is not a folder; pass a folder of data sets or a list of files")
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except PermissionError:
        raise DataSetPermissionError(
            f"{str(folder)!r} cannot be listed: permission denied; ask its owner for read access (chmod o+rx)"
        ) from None
    suffixes = dataset_suffixes()
    folders, datasets = [], []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            (datasets if is_dataset_folder(entry.path) else folders).append(entry.path)
        elif entry.is_file() and entry.name.lower().endswith(suffixes):
            datasets.append(entry.path)
    return folders, datasets

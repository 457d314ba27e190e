"""``open_dataset``: the one entry point from a path or an array to a :class:`DataSet`."""

from __future__ import annotations

import errno
import inspect
import os
import re
import stat
from typing import Any, Optional

import numpy as np

from ..errors import (
    DataSetError,
    DataSetNotFoundError,
    DataSetPermissionError,
    FormatError,
    StemExplorerError,
)
from . import builtin  # noqa: F401  (registers the built-in readers)
from .base import DataSet
from .calibration import Calibration
from .memory import is_dask_array
from .registry import ReaderPlugin, find_reader, get_reader

__all__ = ["open_dataset", "reader_options"]

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_dataset(
    path_or_array: Any, *, format: Optional[str] = None, calibration: Optional[dict] = None, **options
) -> DataSet:
    """Open 4D-STEM data as a :class:`DataSet`.

    ``path_or_array`` is a file or directory path (``str`` / ``os.PathLike``), a URL
    whose scheme names a registered reader (``hdfs://...`` once an HDFS reader is
    installed), or a numpy / dask array: 3-D ``(frames, sig_y, sig_x)`` or 4-D
    ``(scan_y, scan_x, sig_y, sig_x)``. ``format`` names the reader (see
    :func:`stem_explorer.io.readers`); without it the reader is picked by file suffix,
    then by the file's first bytes. ``options`` go to the reader, e.g. ``nav_shape``,
    ``sig_shape``, ``dtype`` for raw files or ``dataset`` for HDF5; a keyword the reader
    does not know is an error that lists the ones it does.

    ``calibration`` overrides any part of the calibration the file stores, e.g.
    ``{"scan_step": "0.5 nm", "detector_pixel": "0.8 mrad", "beam_energy": "300 keV"}``
    (see :class:`~stem_explorer.io.calibration.Calibration`); it is checked before the
    file is opened.
    """
    user = Calibration(calibration, source="user") if calibration is not None else None
    dataset = _open(path_or_array, format, options, user is not None)
    if user is not None:
        dataset.calibration = dataset.calibration.override(user)
    return dataset


def _open(path_or_array: Any, format: Optional[str], options: dict, calibrating: bool) -> DataSet:
    if isinstance(path_or_array, DataSet):
        if calibrating:
            raise DataSetError(
                "open_dataset() got a DataSet that is already open, with calibration=...; set "
                "dataset.calibration = dataset.calibration.override({...}) instead"
            )
        if format is not None or options:
            raise DataSetError(
                "open_dataset() got a DataSet that is already open, with format/options; "
                "pass the path instead to open it with other options"
            )
        return path_or_array
    if isinstance(path_or_array, np.ndarray) or is_dask_array(path_or_array):
        if format not in (None, "memory"):
            raise DataSetError(
                f"format={format!r} is for files, but an array was given; leave format "
                f"out (arrays use the 'memory' reader) or pass a file path"
            )
        return _call(get_reader("memory"), path_or_array, options)
    if not isinstance(path_or_array, (str, os.PathLike)):
        raise DataSetError(
            f"open_dataset() takes a path, a numpy array or a dask array, got "
            f"{type(path_or_array).__name__}; convert array-likes with np.asarray(...)"
        )
    path = os.fspath(path_or_array)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    url = _URL.match(path)
    if url and url.group(1).lower() != "file":
        return _open_url(path, url.group(1).lower(), format, options)
    if url:  # file://
        path = path[len("file://") :]
    path = os.path.expanduser(path)
    _check_path(path)
    plugin = get_reader(format) if format is not None else find_reader(path)
    return _call(plugin, path, options)


#: what ``stat`` calls the kinds of files that are neither regular files nor folders
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _check_path(path: str) -> None:
    """Refuse a local path no reader can use, before any reader touches it.

    Only regular files and folders pass: sniffing a named pipe's first bytes blocks
    until a writer comes (forever, usually), and a device is no data file. A path that
    cannot be used says why (a dangling or looping symbolic link, a folder this user
    may not enter, a file this user may not read) instead of "does not exist".
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise DataSetNotFoundError(
                f"{path!r} is a symbolic link to {os.readlink(path)!r}, which does not "
                f"exist; point the link at the data or open the data's own path"
            ) from None
        raise DataSetNotFoundError(
            f"{path!r} does not exist; check the path (relative paths start at "
            f"{os.getcwd()!r})"
        ) from None
    except PermissionError:
        raise DataSetPermissionError(
            f"{path!r} cannot be reached: permission denied on a folder of its path; ask "
            f"the owner to let you enter the folders (chmod o+x), or copy the data"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DataSetError(
                f"{path!r} is a symbolic link loop (links that point at each other); "
                f"point the link at the data file itself"
            ) from None
        raise DataSetError(f"{path!r} cannot be examined ({exc.strerror}); check the path") from None
    if stat.S_ISDIR(info.st_mode):
        return _check_readable(path, folder=True)
    if stat.S_ISREG(info.st_mode):
        return _check_readable(path, folder=False)
    kind = next((name for test, name in _SPECIAL_FILES if test(info.st_mode)), "not a regular file")
    raise DataSetError(
        f"{path!r} is {kind}, not a regular file or folder: stem_explorer reads data "
        f"from files (streamed data from a detector goes to a file first); pass the "
        f"path of a data file"
    )


def _check_readable(path: str, *, folder: bool) -> None:
    try:
        if folder:
            with os.scandir(path):
                pass
        else:
            with open(path, "rb"):
                pass
    except PermissionError:
        what = "list the folder" if folder else "read the file"
        raise DataSetPermissionError(
            f"{path!r} exists but this user may not {what} (permission denied); ask its "
            f"owner for read access (chmod o+r), or open a copy"
        ) from None


def _open_url(url: str, scheme: str, format: Optional[str], options: dict) -> DataSet:
    """URLs go to the reader registered under the scheme's name (or ``format``)."""
    name = format or scheme
    try:
        plugin = get_reader(name)
    except FormatError:
        raise DataSetError(
            f"cannot open {url!r}: no reader handles {scheme}:// URLs; pass a local path "
            f"or install a reader plugin named {scheme!r}"
        ) from None
    return _call(plugin, url, options)


def reader_options(plugin: ReaderPlugin) -> Optional[list[str]]:
    """Keyword options ``plugin.open`` accepts, or None when it takes any."""
    try:
        params = list(inspect.signature(plugin.open).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [
        p.name
        for p in params[1:]
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def _call(plugin: ReaderPlugin, target: Any, options: dict) -> DataSet:
    accepted = reader_options(plugin)
    if accepted is not None:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            listed = ", ".join(accepted) or "none"
            raise DataSetError(
                f"the {plugin.name!r} reader does not take the option(s) "
                f"{', '.join(unknown)}; its options are: {listed}"
            )
    try:
        return plugin.open(target, **options)
    except StemExplorerError:
        raise
    except PermissionError as exc:
        # a side file (a .hdr, an _info.txt, an HDF5 external link's target) the user
        # may not read, or a file whose mode changed since the check above
        where = exc.filename or target
        raise DataSetPermissionError(
            f"the {plugin.name!r} reader may not read {where!r} (permission denied); ask "
            f"its owner for read access (chmod o+r), or open a copy"
        ) from None
    except IsADirectoryError as exc:
        raise DataSetError(
            f"{exc.filename or target!r} is a folder, but the {plugin.name!r} reader reads "
            f"a file; pass the data file inside the folder, or the format=... of a folder "
            f"reader"
        ) from None

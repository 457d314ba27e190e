"""The package's error for a file that cannot be written: which file, why, and what to
do, instead of a raw ``OSError`` (a full disk, a quota, a read-only or foreign folder)."""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager

from ..errors import DataSetError

_FIXES = {
    errno.ENOSPC: ("no space left on the device", "free space there or choose another destination"),
    errno.EDQUOT: ("the disk quota is exhausted", "free space within your quota or choose another destination"),
    errno.EFBIG: ("the file is larger than this file system or process allows",
                  "choose another destination or raise the limit (ulimit -f)"),
    errno.EROFS: ("the file system is read-only", "choose a writable destination"),
    errno.EACCES: ("permission denied", "choose a folder you may write to, or ask its owner"),
    errno.EPERM: ("operation not permitted", "choose a folder you may write to, or ask its owner"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose a folder as the destination"),
}


def write_error(path, exc: OSError) -> DataSetError:
    """A :class:`DataSetError` naming ``path``, the cause of ``exc`` and the fix."""
    problem, fix = _FIXES.get(exc.errno, (exc.strerror or str(exc), "check the destination and try again"))
    return DataSetError(f"cannot write {os.fspath(path)}: {problem}; {fix}")


@contextmanager
def writing(path):
    """Turn an ``OSError`` raised while writing ``path`` into :func:`write_error`'s."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, DataSetError):
            raise
        raise write_error(path, exc) from None

"""Atomic file writes that leave nothing behind (results files, TIFF and PNG exports).

A file is written under a temporary name beside its target, flushed to disk and then
renamed over the target, so a reader sees the old file or the new one, never a part
of one. The temporary gets the mode ``open(path, "w")`` would give: the caller's umask
applied to 0o666 for a new file, the old file's mode when one is replaced.

A process killed mid-write (SIGKILL, out of memory) leaves its temporary behind, and
no ``finally`` can remove it. Temporaries are therefore named after their maker,
``.<name>.stem-explorer-<host>-<pid>-<random>.tmp``, and the next write of the same
target removes the ones whose process is gone: same host, same owner, a dead pid.
Nothing else is ever removed; a live pid (even a reused one) keeps its file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
import stat
import threading
from pathlib import Path
from typing import Iterator

from .errors import SaveError, StemExplorerError

#: bytes of the target's name kept in a temporary's name (names stay under 255 bytes)
_NAME_BYTES = 150


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _short_name(target: Path) -> str:
    return os.fsencode(target.name)[:_NAME_BYTES].decode(errors="ignore")


#: a temporary's name after its target's: maker's host tag, pid, random part
_TEMP_TAIL = re.compile(r"\.stem-explorer-(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]{8}\.tmp")
#: any temporary's name: a dot, its target's name, the tail
_TEMPORARY = re.compile(r"\..+" + _TEMP_TAIL.pattern)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove temporaries of ``target`` left by writers of this host that died;
    returns the removed paths."""
    # a plain prefix test first: a batch's folder holds thousands of other files, and
    # one compiled pattern for every target (a pattern per target name would be
    # compiled anew for each, the re module caching only a few hundred)
    prefix = f".{_short_name(target)}"
    return _remove_stale(target.parent, lambda name: _TEMP_TAIL.fullmatch(name, len(prefix))
                         if name.startswith(prefix) else None)


def sweep_stale_temporaries(folder) -> list[Path]:
    """Remove the temporaries of every file in ``folder`` left by writers of this
    host that died (what :func:`remove_stale_temporaries` does for one target, in
    one look at the folder); returns the removed paths."""
    return _remove_stale(Path(folder), _TEMPORARY.fullmatch)


def _remove_stale(folder: Path, match) -> list[Path]:
    """Remove the files in ``folder`` whose name ``match(name)`` finds a temporary's
    and whose writer died: same host, same owner, a dead pid."""
    host, uid = _host_tag(), os.getuid()
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        found = match(entry.name)
        if not found or found["host"] != host or _pid_alive(int(found["pid"])):
            continue
        try:
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(info.st_mode) and info.st_uid == uid:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:  # gone meanwhile, or not ours to remove
            pass
    return removed


#: per thread: the folders swept for the rest of a ``stale_temporaries_swept`` block
_swept = threading.local()


@contextlib.contextmanager
def stale_temporaries_swept(folder) -> Iterator[None]:
    """Sweep ``folder`` of stale temporaries once (:func:`sweep_stale_temporaries`);
    within the block this thread's atomic writes into ``folder`` skip their own look
    for their target's: a writer of many files in one folder would otherwise scan it
    once per file (1 ms at 1,000 files, growing with each). A temporary left meanwhile
    by another process that died is removed by the next sweep or save outside a block."""
    folder = Path(os.path.abspath(folder))
    sweep_stale_temporaries(folder)
    outer = getattr(_swept, "folders", frozenset())
    _swept.folders = outer | {folder}
    try:
        yield
    finally:
        _swept.folders = outer


def _resolve_target(path) -> Path:
    """The file to replace: a symlink's target (the link stays a link)."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    if target.is_dir():
        raise SaveError(f"cannot save to {str(path)!r}: it is a folder; give a file name inside it, e.g. {str(path / 'results.h5')!r}")
    return target


def check_writable(path) -> None:
    """Raise :class:`~stem_explorer.errors.SaveError` now if ``path`` is a folder or
    its folder cannot be written: for checks before long work that ends in a save."""
    check_writable_folder(_resolve_target(path).parent, path)


def check_writable_folder(folder, path=None) -> None:
    """Raise :class:`~stem_explorer.errors.SaveError` unless files can be created in
    ``folder`` (or, where it does not exist yet, in the folder that will hold it)."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SaveError(f"cannot save {str(path or folder)!r}: {str(existing)!r} is a file, not a folder; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SaveError(
            f"cannot save {str(path or folder)!r}: the folder {str(existing)!r} is not writable "
            f"(read-only file system or permissions); choose a folder you can write to"
        )


def _create_temporary(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    name = f".{_short_name(target)}.stem-explorer-{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    tmp = target.parent / name
    # 0o666 through the umask, as open(path, "w") does (mkstemp would give 0o600)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
    return tmp


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder
        pass
    finally:
        os.close(fd)


#: per thread: the folders whose fsync waits for the end of a ``folder_syncs_deferred`` block
_deferred = threading.local()


@contextlib.contextmanager
def folder_syncs_deferred() -> Iterator[None]:
    """Within the block, this thread's atomic writes sync each file's data before its
    rename as always, but leave the fsync of the folder (which makes the new name
    itself durable) to the end of the block: one for all the files written in it.

    For a writer of many small files that records a file as done only after the
    block: until then a crash may lose a rename (the old file, or none, is there
    after it), never leave a name pointing at unwritten data. A block inside another
    syncs its own files' folders at its end.

    Raises
    ------
    SaveError
        A folder could not be synced at the end (it went away).
    """
    outer, folders = getattr(_deferred, "folders", None), set()
    _deferred.folders = folders
    try:
        yield
    finally:
        _deferred.folders = outer
        for folder in folders:
            try:
                _fsync(folder)
            except OSError as exc:  # the folder went away meanwhile
                raise SaveError(
                    f"cannot save in {str(folder)!r}: {_reason(exc)}; the files written there may be lost; "
                    f"choose a folder you can write to"
                ) from exc


def _commit(tmp: Path, target: Path) -> None:
    _fsync(tmp)  # the data is on disk before the name points at it
    try:
        os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))  # replacing keeps the mode, as "w" does
    except FileNotFoundError:
        pass
    os.replace(tmp, target)
    deferred = getattr(_deferred, "folders", None)
    if deferred is None:
        _fsync(target.parent)
    else:
        deferred.add(target.parent)


@contextlib.contextmanager
def atomic_write(path) -> Iterator[str]:
    """Yield a temporary path to write; it replaces ``path`` when the block succeeds.

    Raises :class:`~stem_explorer.errors.SaveError` when ``path`` is a folder or cannot
    be written (permissions, read-only or full file system); the temporary is removed
    on any failure.
    """
    target = _resolve_target(path)
    try:
        if Path(os.path.abspath(target.parent)) not in getattr(_swept, "folders", ()):
            remove_stale_temporaries(target)
        tmp = _create_temporary(target)
    except OSError as exc:
        raise _save_error(path, target, exc) from None
    try:
        yield str(tmp)
        _commit(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, StemExplorerError):
            raise _save_error(path, target, exc) from exc
        raise


def _reason(exc: OSError) -> str:
    if exc.errno:
        return os.strerror(exc.errno)
    # h5py's errors carry the system's error only in their text ("errno = 28, ...")
    found = re.search(r"errno = (\d+)", str(exc))
    return os.strerror(int(found[1])) if found else " ".join(str(exc).split())


def _save_error(path, target: Path, exc: OSError) -> SaveError:
    reason = _reason(exc)
    return SaveError(
        f"cannot save {str(path)!r}: {reason} (in {str(target.parent)!r}); choose a folder you "
        f"can write to with free space, or fix its permissions"
    )

"""A raw partition data set written while a live acquisition arrives: :class:`Recording`,
and :func:`recover_recording` for one whose process died.

The files are the raw partition format's (``part-NNNNN.raw``, ``dataset.json``), with
three differences from :class:`~.writer.RawPartitionWriter`, all for reading while
writing:

* part ``k`` holds frames ``k * F`` to ``(k + 1) * F`` (``F`` frames per part), under
  its final name from its first byte: a task that maps a part while it grows is
  never renamed under (``dataset.json``, published last, still alone marks a data set);
* :meth:`Recording.source` gives the frames recorded so far, by range, to tasks;
* each completed part is journalled (name, frames, size, sha256, synced) in
  ``recording.json``, so the recorded part of an acquisition survives its process:
  :func:`recover_recording` publishes it.

An acquisition that ends early publishes the frames it got (:meth:`Recording.close_partial`):
whole scan rows as a smaller scan, else a stack, with what happened in the metadata.
``keep=False`` makes the recording a spool in a temporary folder (``/dev/shm`` where
there is one): parts are deleted once consumed (:meth:`Recording.release_before`),
nothing is hashed or published. A receiver may also put frames straight into a
spool's parts (:meth:`Recording.slot`, then :meth:`Recording.commit`): the parts are
then mapped, and a consumed part's file is kept for reuse (while the spool's files
stay within ``spool_parts``), so its memory is not freed and allocated (and zeroed)
again for every part.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import mmap
import os
import re
import shutil
import tempfile
import threading
from typing import Optional

import numpy as np

from ...errors import DataSetError, DataSetNotFoundError, FormatError
from .reader import RawPartitionDataSet, RawPartitionSource, open_raw_partitions
from .codecs import part_file_name
from .sidecar import SIDECAR_NAME, sidecar_document
from .writer import DEFAULT_FILE_BYTES, RawPartitionWriter, publish_sidecar, write_json_atomically

JOURNAL_NAME = "recording.json"
_SPOOL_ROOT = "/dev/shm"
#: Spool folders are named after the process that made them: ``stem-explorer-live-<pid>-<random>``.
_SPOOL_PREFIX = "stem-explorer-live-"


class _NoHash:
    """Stands in for sha256 in a spool, whose parts are never published."""

    def update(self, data) -> None:
        pass

    def hexdigest(self) -> str:
        return "0" * 64


class Recording(RawPartitionWriter):
    """Frames of a live acquisition of ``nav_shape`` written to ``dest`` as they arrive
    (:meth:`write_frames`, one buffer per frame, in acquisition order).

    ``keep=False`` (``dest`` None): a spool in a temporary folder, removed by
    :meth:`close`; received in place (:meth:`slot`), it keeps consumed part files for
    reuse while it holds fewer than ``spool_parts`` files. ``overwrite=True`` replaces
    a data set, or the journal of an unrecovered recording, found in ``dest``; without
    it either is an error.
    """

    def __init__(self, dest=None, *, nav_shape, sig_shape, dtype, partition_bytes: int = DEFAULT_FILE_BYTES,
                 metadata: Optional[dict] = None, overwrite: bool = False, keep: bool = True, spool_parts: int = 2):
        self.keep = bool(keep)
        self.spool_parts = int(spool_parts)
        if dest is None:
            if self.keep:
                raise DataSetError("a kept recording needs a folder: pass dest=... (or keep=False)")
            root = _SPOOL_ROOT if os.access(_SPOOL_ROOT, os.W_OK) else tempfile.gettempdir()
            _remove_orphaned_spools(root)
            dest = tempfile.mkdtemp(prefix=f"{_SPOOL_PREFIX}{os.getpid()}-", dir=root)
        super().__init__(dest, nav_shape=nav_shape, sig_shape=sig_shape, dtype=dtype,
                         partition_bytes=partition_bytes, metadata=metadata, overwrite=overwrite)
        self._created_dest = self._created_dest or not self.keep
        self._journal = os.path.join(self.dest, JOURNAL_NAME)
        self._released_parts = 0
        self._publishing = False
        self._slots: dict[int, np.ndarray] = {}  # part index -> its mapped frames (receiving in place)
        self._spares: list[str] = []  # consumed part files to reuse (receiving in place)
        self._in_place = False
        if self.keep and os.path.exists(self._journal):
            if not overwrite:
                raise DataSetError(
                    f"{self.dest!r} holds an unfinished recording ({JOURNAL_NAME}); publish its "
                    f"recorded frames with stem_explorer.io.partitioned.recover_recording("
                    f"{self.dest!r}), or pass overwrite=True to replace it"
                )
            _remove_journalled(self.dest, self._journal)
        self._start()
        if self.keep:  # publishing validates with jsonschema, whose first import takes
            # seconds on a loaded machine: import it while the frames arrive instead
            threading.Thread(target=importlib.import_module, args=("jsonschema",), daemon=True).start()

    # -- writing ------------------------------------------------------------------------
    def _part_path(self, name: str) -> str:
        return os.path.join(self.dest, name)

    def _open_part(self) -> None:
        super()._open_part()
        if not self.keep:
            self._hash = _NoHash()

    def _sync_part(self, f) -> None:
        if self.keep:  # a spool part is read back at once and then deleted: no sync
            super()._sync_part(f)
        else:
            f.flush()

    def _finish_part(self) -> None:
        super()._finish_part()
        if self.keep and not self._publishing:  # the sidecar follows at once
            write_json_atomically(self._journal, {
            "nav_shape": list(self.nav_shape), "sig_shape": list(self.sig_shape),
            "dtype": self.dtype.str, "frames_per_file": self.frames_per_file,
            "parts": self._parts, "metadata": self.metadata,
        })

    # -- receiving in place (a spool) ----------------------------------------------------
    def slot(self, position: int) -> np.ndarray:
        """The bytes (uint8, one frame's) where frame ``position`` of a spool goes: a
        receiver reads the frame into it, then :meth:`commit` records it, so frames
        are received where the jobs read them, without a copy. ``position`` is at or
        after :attr:`frames_written`; a slot left unwritten must be zeroed by the
        caller (a reused part holds old frames)."""
        if self.keep:
            raise DataSetError("frames are received in place only into a spool (keep=False); use write_frames")
        if not self.frames_written <= position < self.n_frames:
            raise DataSetError(f"frame {position} is not the next to record (of {self.n_frames}, "
                               f"{self.frames_written} recorded)")
        k = position // self.frames_per_file
        if k not in self._slots:
            self._in_place = True
            self._slots[k] = self._map_part(k)
        return self._slots[k][position - k * self.frames_per_file]

    def _map_part(self, k: int) -> np.ndarray:
        """Part ``k`` (a reused one when there is one) sized and mapped, its pages
        faulted in at once (``MAP_POPULATE``: cheaper than a fault per page)."""
        path = os.path.join(self.dest, part_file_name(k, None))
        n = min(self.frames_per_file, self.n_frames - k * self.frames_per_file)
        if self._spares:
            os.replace(self._spares.pop(), path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size != n * self.frame_bytes:
                os.ftruncate(fd, n * self.frame_bytes)
            mapped = mmap.mmap(fd, n * self.frame_bytes, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
        finally:
            os.close(fd)
        return np.frombuffer(mapped, np.uint8).reshape(n, self.frame_bytes)

    def commit(self, n: int) -> None:
        """Record the next ``n`` frames, received into their :meth:`slot`."""
        if self.frames_written + n > self.n_frames:
            raise DataSetError(f"committing {n} more frames would make {self.frames_written + n} of {self.n_frames}")
        self.frames_written += n
        self._close_slots()

    def _close_slots(self, sealing: bool = False) -> None:
        """Unmap the mapped parts whose frames are all recorded and list them (when
        ``sealing``, every mapped part, cut to the frames recorded)."""
        per, written = self.frames_per_file, self.frames_written
        for k in sorted(self._slots):
            start, stop = k * per, min((k + 1) * per, self.n_frames)
            if stop > written and not sealing:
                break
            del self._slots[k]
            if start < written:
                stop = min(stop, written)
                self._parts.append({"file": part_file_name(k, None), "start": start, "stop": stop,
                                    "bytes": (stop - start) * self.frame_bytes, "sha256": _NoHash().hexdigest()})

    # -- reading while writing ------------------------------------------------------------
    @property
    def first_held(self) -> int:
        """The first frame still on disk (later than 0 in a spool once parts were
        released; the frames written when every part was: the last part is short)."""
        return min(self._released_parts * self.frames_per_file, self.frames_written)

    def source(self, start: int, stop: int) -> RawPartitionSource:
        """A picklable source of frames ``start:stop``, which must be recorded already
        (``stop <= frames_written``) and still held."""
        written = self.frames_written
        if not self.first_held <= start <= stop <= written:
            raise DataSetError(
                f"frames {start}:{stop} are not in the recording: {written} of "
                f"{self.n_frames} frames recorded so far"
                + (f", frames before {self.first_held} discarded" if self.first_held else "")
                + "; wait for them (LiveDataSet.wait_for_frames), or run a job, which "
                "follows the acquisition"
            )
        per = self.frames_per_file
        parts = [
            (part_file_name(k, None), k * per, min((k + 1) * per, written), ())
            for k in range(start // per, -(-stop // per))
        ]
        return RawPartitionSource(self.dest, parts, n_frames=self.n_frames, sig_shape=self.sig_shape, dtype=self.dtype)

    def piece_end(self, start: int, stop: int) -> int:
        """Where one source of :meth:`source` from ``start`` ends: ``stop``, or the end
        of the partition file holding ``start``. A source can span files, but reading
        across two copies the frames into a buffer, where frames of one file are a view
        of its mapping (a live job's chunks cut there: the copy had cost its thread
        about a third of its time)."""
        per = self.frames_per_file
        return min(stop, (start // per + 1) * per)

    def release_before(self, frame: int) -> None:
        """In a spool, delete the complete parts holding only frames before ``frame``."""
        if self.keep:
            return
        while self._released_parts < len(self._parts) and self._parts[self._released_parts]["stop"] <= frame:
            path = os.path.join(self.dest, self._parts[self._released_parts]["file"])
            try:
                held = len(self._parts) - self._released_parts - 1 + len(self._slots)
                if self._in_place and held + len(self._spares) < self.spool_parts:
                    spare = os.path.join(self.dest, f"spare-{self._released_parts}")
                    os.replace(path, spare)
                    self._spares.append(spare)
                else:
                    os.remove(path)
            except FileNotFoundError:
                pass
            self._released_parts += 1

    # -- ending -----------------------------------------------------------------------------
    def seal(self) -> None:
        """Finish the part being written without publishing (a spool's last part)."""
        if self._file is not None:
            self._finish_part()
        self._close_slots(sealing=True)

    def close(self) -> Optional[str]:
        """Publish the complete recording (returns ``dataset.json``'s path), or remove
        the spool (returns None)."""
        if not self.keep:
            self.abort()
            return None
        self._publishing = True
        path = super().close()
        if os.path.exists(self._journal):
            os.remove(self._journal)
        return path

    def close_partial(self, reason: str) -> Optional[str]:
        """Publish the frames written so far after an acquisition that ended early:
        whole scan rows as a scan of fewer rows, else a stack of frames, ``reason`` and
        the planned scan in ``metadata["acquisition"]``. Returns ``dataset.json``'s path,
        or None when nothing is kept (a spool, or no frame written)."""
        if not self.keep or self.frames_written == 0:
            self.abort()
            return None
        self._publishing = True
        path = self._publish(*_partial_layout(self.frames_written, self.nav_shape, self.metadata, reason))
        if os.path.exists(self._journal):
            os.remove(self._journal)
        return path

    def abort(self) -> None:
        """Remove every file this recording wrote (the spool folder too)."""
        self._slots.clear()  # unmapped, or a removed file's memory stays held
        super().abort()
        for path in (self._journal, self._journal + ".tmp"):
            if os.path.exists(path):
                os.remove(path)
        if not self.keep and os.path.isdir(self.dest):
            shutil.rmtree(self.dest, ignore_errors=True)


def _remove_orphaned_spools(root: str) -> None:
    """Remove this user's spool folders whose process is gone (killed before it could:
    in /dev/shm they hold memory until the machine restarts)."""
    pattern = re.compile(re.escape(_SPOOL_PREFIX) + r"(\d+)-\w+$")
    for entry in os.scandir(root):
        found = pattern.match(entry.name)
        if not found or not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != os.getuid():
            continue
        try:
            os.kill(int(found[1]), 0)
        except ProcessLookupError:
            shutil.rmtree(entry.path, ignore_errors=True)
        except PermissionError:  # a process of another user has that pid now
            pass


def _partial_layout(n_written: int, nav_shape, metadata: dict, reason: str):
    """``(nav_shape, metadata)`` of the first ``n_written`` frames of a scan."""
    width = nav_shape[-1] if len(nav_shape) == 2 else None
    nav = (n_written // width, width) if width and n_written % width == 0 else (n_written,)
    acquisition = {"complete": False, "frames": n_written, "planned_nav_shape": list(nav_shape), "reason": reason}
    return nav, dict(metadata, acquisition=acquisition)


def _remove_journalled(dest: str, journal: str) -> None:
    """Remove the parts an old journal lists (and the part after them) and the journal."""
    with open(journal, encoding="utf-8") as f:
        doc = json.load(f)
    names = [p["file"] for p in doc.get("parts", [])] + [part_file_name(len(doc.get("parts", [])), None)]
    for name in names:
        path = os.path.join(dest, os.path.basename(name))
        if os.path.exists(path):
            os.remove(path)
    os.remove(journal)


def recover_recording(dest) -> RawPartitionDataSet:
    """Publish the recorded frames of a recording whose process died before it could
    (``recording.json`` without ``dataset.json``): the parts the journal lists and the
    whole frames of the part after them (cut to them and hashed), then open it. A
    published recording is just opened."""
    dest = os.path.abspath(os.fspath(dest))
    if os.path.exists(os.path.join(dest, SIDECAR_NAME)):
        return open_raw_partitions(dest)
    journal = os.path.join(dest, JOURNAL_NAME)
    try:
        with open(journal, encoding="utf-8") as f:
            doc = json.load(f)
        parts, nav_shape = list(doc["parts"]), tuple(doc["nav_shape"])
        sig_shape, dtype = tuple(doc["sig_shape"]), np.dtype(doc["dtype"])
    except FileNotFoundError:
        raise DataSetNotFoundError(
            f"{dest!r} holds neither {SIDECAR_NAME} nor {JOURNAL_NAME}: there is no recording to recover"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{journal!r} is damaged ({exc}); the recording cannot be recovered") from None
    written = parts[-1]["stop"] if parts else 0
    tail = _tail_part(dest, len(parts), written, math.prod(sig_shape) * dtype.itemsize)
    if tail is not None:
        parts.append(tail)
        written = tail["stop"]
    if written == 0:
        raise DataSetError(f"{dest!r}: the recording holds no complete frame; there is nothing to recover")
    nav, metadata = _partial_layout(written, nav_shape, doc.get("metadata") or {},
                                    "recovered after the recording process ended")
    publish_sidecar(dest, sidecar_document(nav, sig_shape, dtype, parts, metadata))
    os.remove(journal)
    return open_raw_partitions(dest)


def _tail_part(dest: str, index: int, start: int, frame_bytes: int) -> Optional[dict]:
    """The whole frames of the part being written when the recording stopped, cut to
    them and hashed, or None when it holds none."""
    name = part_file_name(index, None)
    path = os.path.join(dest, name)
    if not os.path.exists(path):
        return None
    n = os.path.getsize(path) // frame_bytes
    if n == 0:
        return None
    os.truncate(path, n * frame_bytes)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * 2**20):
            digest.update(chunk)
    return {"file": name, "start": start, "stop": start + n, "bytes": n * frame_bytes, "sha256": digest.hexdigest()}

"""The raw partition format: the project's own layout for ingested data.

A data set is a directory holding ``dataset.json`` (the sidecar, described by
``schemas/raw_partitions.schema.json``) and partition files ``part-00000.raw``,
``part-00001.raw``, ... Each file is the C-order bytes of a contiguous range of frames
(flat scan index), without headers, so it is memory-mapped zero-copy and one file is
one unit of work. The sidecar records every file's frame range, size, sha256 and,
optionally, the hosts that hold it locally (locality hints for the scheduler).

:class:`RawPartitionWriter` writes the format crash-safely: parts are written as
``*.tmp`` and renamed when complete, and ``dataset.json`` appears (atomically) only
when every frame has been written. A directory without ``dataset.json`` is not a data
set.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import re
from functools import lru_cache
from importlib import resources
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import ChecksumError, DataSetError, DataSetNotFoundError, FormatError
from .._json import jsonable
from .base import (
    DEFAULT_PARTITION_BYTES,
    DataSet,
    FrameReader,
    FrameSource,
    Partition,
    plan_partitions,
)
from .raw import _check_range, map_frames, parse_dtype, parse_shape
from .registry import ReaderPlugin, register_reader

__all__ = [
    "DEFAULT_FILE_BYTES",
    "FORMAT_NAME",
    "SIDECAR_NAME",
    "RawPartitionDataSet",
    "RawPartitionReader",
    "RawPartitionSource",
    "RawPartitionWriter",
    "open_raw_partitions",
    "read_sidecar",
    "sidecar_schema",
    "verify_partitions",
    "write_raw_partitions",
]

FORMAT_NAME = "stem_explorer.raw_partitions"
FORMAT_VERSION = 1
SIDECAR_NAME = "dataset.json"
#: Default size of one partition file written by :class:`RawPartitionWriter`.
DEFAULT_FILE_BYTES = 256 * 2**20
_HASH_BLOCK = 8 * 2**20
_TMP_PART = re.compile(r"^part-\d{5,}\.raw\.tmp$")


# -- the sidecar ----------------------------------------------------------------------------
@lru_cache(maxsize=1)
def sidecar_schema() -> dict:
    """The JSON Schema (draft 2020-12) of ``dataset.json``."""
    text = resources.files(__package__).joinpath("schemas/raw_partitions.schema.json").read_text()
    return json.loads(text)


def _sidecar_path(path) -> tuple[str, str]:
    """``(directory, sidecar file)`` for a data set directory or its ``dataset.json``."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        return path, os.path.join(path, SIDECAR_NAME)
    return os.path.dirname(path), path


def _field_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def validate_sidecar(doc: Any, where: str = SIDECAR_NAME) -> None:
    """Raise :class:`FormatError` naming the field and rule where ``doc`` breaks the
    schema."""
    import jsonschema

    if (
        isinstance(doc, dict)
        and doc.get("format") == FORMAT_NAME
        and doc.get("version") != FORMAT_VERSION
    ):
        raise FormatError(
            f"{where} is raw partition format version {doc.get('version')!r}, but this "
            f"stem_explorer reads version {FORMAT_VERSION}; upgrade stem_explorer"
        )
    validator = jsonschema.Draft202012Validator(sidecar_schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        rule = error.validator
        value = error.validator_value
        if rule in ("minimum", "maximum", "minItems", "maxItems", "minLength", "const"):
            rule = f"{rule} {value!r}"
        raise FormatError(
            f"{where} does not match the raw partition schema at field "
            f"{_field_path(error.absolute_path)}: {error.message} (rule: {rule}); fix "
            f"{SIDECAR_NAME} or re-ingest the data set"
        )


def _check_layout(doc: dict, where: str) -> tuple[np.dtype, list[dict]]:
    """Consistency the schema cannot express: dtype, sizes, and partitions tiling all
    frames without gaps or overlaps. Returns the dtype and the partitions by start."""
    fix = f"repair {SIDECAR_NAME} or re-ingest the data set"
    try:
        dtype = parse_dtype(doc["dtype"])
    except DataSetError as exc:
        raise FormatError(f"{where}: field dtype: {exc}") from None
    n_frames = math.prod(doc["nav_shape"])
    frame_bytes = math.prod(doc["sig_shape"]) * dtype.itemsize
    parts = sorted(doc["partitions"], key=lambda p: (p["start"], p["stop"]))
    names = [p["file"] for p in parts]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise FormatError(f"{where} lists the partition file(s) {', '.join(dup)} twice; {fix}")
    expected = 0
    previous = None
    for p in parts:
        if p["stop"] <= p["start"]:
            raise FormatError(
                f"{where}: partition {p['file']} has start {p['start']} >= stop "
                f"{p['stop']}; {fix}"
            )
        if p["start"] > expected:
            after = f" (after {previous['file']})" if previous else ""
            raise FormatError(
                f"{where}: the partitions leave a gap: frames {expected}:{p['start']} are in "
                f"no partition file{after}, before {p['file']}; {fix}"
            )
        if p["start"] < expected:
            raise FormatError(
                f"{where}: the partitions overlap: frames {p['start']}:{min(expected, p['stop'])} "
                f"are in both {previous['file']} and {p['file']}; {fix}"
            )
        want = (p["stop"] - p["start"]) * frame_bytes
        if p["bytes"] != want:
            raise FormatError(
                f"{where}: partition {p['file']} records {p['bytes']} bytes but frames "
                f"{p['start']}:{p['stop']} of {tuple(doc['sig_shape'])} {dtype.str} take "
                f"{want} bytes; {fix}"
            )
        expected = p["stop"]
        previous = p
    if expected != n_frames:
        what = (
            f"frames {expected}:{n_frames} are in no partition file"
            if expected < n_frames
            else f"the partitions hold {expected} frames but nav_shape "
            f"{tuple(doc['nav_shape'])} has only {n_frames}"
        )
        raise FormatError(f"{where}: {what}; {fix}")
    return dtype, parts


def read_sidecar(path) -> tuple[str, dict]:
    """Parse and check ``dataset.json`` of the data set at ``path`` (its directory or the
    file itself). Returns ``(directory, sidecar)`` with partitions sorted by start."""
    directory, sidecar = _sidecar_path(path)
    try:
        with open(sidecar, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        if not os.path.exists(directory):
            raise DataSetNotFoundError(f"{directory!r} does not exist; check the path") from None
        raise DataSetNotFoundError(
            f"{directory!r} has no {SIDECAR_NAME}: it is not a raw partition data set, or "
            f"its ingestion did not finish; re-run the ingestion"
        ) from None
    except UnicodeDecodeError as exc:
        raise FormatError(f"{sidecar!r} is not UTF-8 text ({exc}); fix or re-ingest") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(
            f"{sidecar!r} is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno}; fix the file or re-ingest the data set"
        ) from None
    validate_sidecar(doc, sidecar)
    _dtype, parts = _check_layout(doc, sidecar)
    doc["partitions"] = parts
    return directory, doc


def _check_sizes(directory: str, parts: Sequence[dict]) -> None:
    for p in parts:
        path = os.path.join(directory, p["file"])
        try:
            size = os.stat(path).st_size
        except FileNotFoundError:
            raise DataSetNotFoundError(
                f"partition file {path!r} listed in {SIDECAR_NAME} is missing; re-ingest "
                f"the data set or restore the file"
            ) from None
        if size < p["bytes"]:
            raise FormatError(
                f"partition file {path!r} is truncated: {size} bytes, but {SIDECAR_NAME} "
                f"records {p['bytes']}; re-ingest the data set or restore the file"
            )
        if size > p["bytes"]:
            raise FormatError(
                f"partition file {path!r} is {size} bytes, {size - p['bytes']} more than "
                f"the {p['bytes']} recorded in {SIDECAR_NAME}; re-ingest the data set or "
                f"restore the file"
            )


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_BLOCK):
            h.update(chunk)
    return h.hexdigest()


def _check_hashes(directory: str, parts: Sequence[dict]) -> None:
    bad = []
    for p in parts:
        actual = _sha256(os.path.join(directory, p["file"]))
        if actual != p["sha256"]:
            bad.append(f"{p['file']}: expected sha256 {p['sha256']}, got {actual}")
    if bad:
        raise ChecksumError(
            f"{len(bad)} partition file(s) in {directory!r} do not match their checksums "
            f"({'; '.join(bad)}); the bytes changed since ingestion: re-ingest or restore "
            f"the file(s)"
        )


def verify_partitions(path) -> dict:
    """Check every partition file of the data set at ``path`` against its recorded size
    and sha256 (reads all bytes). Raises :class:`ChecksumError` naming each file that
    differs; returns ``{"files": n, "bytes": total}`` when all match."""
    directory, doc = read_sidecar(path)
    parts = doc["partitions"]
    _check_sizes(directory, parts)
    _check_hashes(directory, parts)
    return {"files": len(parts), "bytes": sum(p["bytes"] for p in parts)}


# -- reading ------------------------------------------------------------------------------------
class RawPartitionSource(FrameSource):
    """Picklable recipe for frames in raw partition files.

    ``parts`` is a tuple of ``(file, start, stop, locations)``. The source a
    :class:`Partition` carries lists only that partition's files (see
    :meth:`subset`), so task pickles stay small however many files the data set has.
    """

    def __init__(
        self,
        directory: str,
        parts: Sequence[tuple[str, int, int, tuple[str, ...]]],
        *,
        n_frames: int,
        sig_shape: Sequence[int],
        dtype,
    ):
        self.directory = os.fspath(directory)
        self.parts = tuple((str(f), int(a), int(b), tuple(loc)) for f, a, b, loc in parts)
        self.n_frames = int(n_frames)
        self.sig_shape = tuple(int(n) for n in sig_shape)
        self.dtype = np.dtype(dtype)
        self._starts = [p[1] for p in self.parts]

    def open(self, payload=None) -> "RawPartitionReader":
        """Open a reader; files are mapped lazily on first read."""
        return RawPartitionReader(self)

    def subset(self, start: int, stop: int) -> "RawPartitionSource":
        """The same source restricted to the files holding frames ``start:stop``."""
        parts = [p for p in self.parts if p[1] < stop and p[2] > start]
        return RawPartitionSource(
            self.directory,
            parts,
            n_frames=self.n_frames,
            sig_shape=self.sig_shape,
            dtype=self.dtype,
        )

    def part_index(self, frame: int) -> int:
        """Index in :attr:`parts` of the file holding flat frame ``frame``."""
        i = bisect.bisect_right(self._starts, frame) - 1
        if i < 0 or not self.parts[i][1] <= frame < self.parts[i][2]:
            held = ", ".join(f"{a}:{b}" for _f, a, b, _l in self.parts)
            raise DataSetError(
                f"frame {frame} is not in this source's partition files (frames {held}); "
                f"read a partition's frames through its own source"
            )
        return i

    def locations(self, start: int, stop: int) -> Optional[tuple[str, ...]]:
        """Hosts holding every file of frames ``start:stop`` (else any of them), or
        None when the sidecar records no locations."""
        hosts = [p[3] for p in self.parts if p[1] < stop and p[2] > start and p[3]]
        if not hosts:
            return None
        common = [h for h in hosts[0] if all(h in other for other in hosts[1:])]
        if common:
            return tuple(common)
        seen: dict[str, None] = {}
        for group in hosts:
            seen.update(dict.fromkeys(group))
        return tuple(seen)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["dtype"] = self.dtype.str
        del state["_starts"]
        return state

    def __setstate__(self, state):
        state["dtype"] = np.dtype(state["dtype"])
        self.__dict__.update(state)
        self._starts = [p[1] for p in self.parts]

    def __repr__(self) -> str:
        return (
            f"RawPartitionSource({self.directory!r}, {len(self.parts)} files, "
            f"n_frames={self.n_frames}, sig_shape={self.sig_shape}, dtype={self.dtype.str!r})"
        )


class RawPartitionReader(FrameReader):
    """Zero-copy views of mapped partition files; a read that spans two files is
    copied into a reused buffer."""

    def __init__(self, source: RawPartitionSource):
        self.source = source
        self._maps: dict[int, np.ndarray] = {}
        self._buffer: Optional[np.ndarray] = None

    def _mapped(self, i: int) -> np.ndarray:
        if i not in self._maps:
            s = self.source
            name, start, stop, _loc = s.parts[i]
            path = os.path.join(s.directory, name)
            try:
                self._maps[i] = map_frames(
                    path, offset=0, n_frames=stop - start, sig_shape=s.sig_shape, dtype=s.dtype
                )
            except FileNotFoundError:
                raise DataSetNotFoundError(
                    f"partition file {path!r} is missing (on this machine); restore it or "
                    f"re-ingest the data set"
                ) from None
        return self._maps[i]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop``: a view of the mapped file when one file holds them."""
        s = self.source
        _check_range(start, stop, s.n_frames)
        if start == stop:
            return np.empty((0,) + s.sig_shape, s.dtype)
        i = s.part_index(start)
        first = s.parts[i][1]
        if stop <= s.parts[i][2]:
            return self._mapped(i)[start - first : stop - first]
        n = stop - start
        if self._buffer is None or len(self._buffer) < n:
            self._buffer = np.empty((n,) + s.sig_shape, s.dtype)
        out = self._buffer[:n]
        pos = start
        while pos < stop:
            i = s.part_index(pos)
            _name, a, b, _loc = s.parts[i]
            end = min(stop, b)
            out[pos - start : end - start] = self._mapped(i)[pos - a : end - a]
            pos = end
        return out

    def close(self) -> None:
        """Unmap the files (views already handed out keep their mapping alive)."""
        self._maps.clear()
        self._buffer = None


class RawPartitionDataSet(DataSet):
    """A raw partition data set: partitions never straddle a partition file."""

    source: RawPartitionSource

    def partitions(
        self, n_workers: int = 1, target_bytes: Optional[int] = None
    ) -> list[Partition]:
        """One partition per file, or runs of whole consecutive files.

        Files are already sized for work units, so ``target_bytes`` (default 128 MiB)
        only groups *small* files: there are about ``total / target_bytes`` partitions
        (rounded up to a multiple of ``n_workers``), but never fewer files than one per
        partition and never a partial file. Each partition's source lists only its own
        files, and its locations are the hosts holding them.
        """
        parts = self.source.parts
        n_workers = max(1, int(n_workers))
        mean_file_bytes = max(1, self.nbytes // len(parts))
        groups = plan_partitions(
            len(parts),
            mean_file_bytes,
            n_workers=n_workers,
            target_bytes=target_bytes or DEFAULT_PARTITION_BYTES,
        )
        out = []
        for index, (g0, g1) in enumerate(groups):
            start, stop = parts[g0][1], parts[g1 - 1][2]
            sub = self.source.subset(start, stop)
            out.append(Partition(index, start, stop, sub, sub.locations(start, stop)))
        return out


def open_raw_partitions(path, *, verify: str = "size") -> RawPartitionDataSet:
    """Open a raw partition data set: its directory, or its ``dataset.json``.

    ``verify="size"`` (default) checks that every file exists with the recorded size;
    ``verify="full"`` also checks every file's sha256 (reads all the data once).
    """
    if verify not in ("size", "full"):
        raise DataSetError(
            f"verify must be 'size' (check file sizes) or 'full' (also sha256), got {verify!r}"
        )
    directory, doc = read_sidecar(path)
    parts = doc["partitions"]
    _check_sizes(directory, parts)
    if verify == "full":
        _check_hashes(directory, parts)
    source = RawPartitionSource(
        directory,
        [(p["file"], p["start"], p["stop"], tuple(p.get("locations", ()))) for p in parts],
        n_frames=math.prod(doc["nav_shape"]),
        sig_shape=doc["sig_shape"],
        dtype=doc["dtype"],
    )
    metadata = dict(doc.get("metadata") or {})
    metadata.update({"n_files": len(parts), "read_path": "mmap", "verified": verify})
    return RawPartitionDataSet(
        source, doc["nav_shape"], format="raw_partitions", path=directory, metadata=metadata
    )


def _sniff_raw_partitions(path) -> bool:
    """A directory holding ``dataset.json``, or a JSON file naming this format."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return os.path.isfile(os.path.join(path, SIDECAR_NAME))
    try:
        with open(path, "rb") as f:
            head = f.read(65536)
    except OSError:
        return False
    return FORMAT_NAME.encode() in head


# -- writing ------------------------------------------------------------------------------------
class RawPartitionWriter:
    """Write frames, in order, as a raw partition data set in directory ``dest``.

    Use as a context manager and call :meth:`write` with blocks ``(n, sig_y, sig_x)`` of
    the declared dtype. A new partition file starts whenever the current one holds
    ``partition_bytes`` (rounded down to whole frames, at least one frame). Files are
    written as ``part-NNNNN.raw.tmp``, hashed as they go, and renamed when complete;
    ``dataset.json`` is published atomically on a successful exit only when all
    ``prod(nav_shape)`` frames were written. An exception inside the ``with`` block (or
    :meth:`abort`) removes everything this writer wrote and publishes nothing.

    An existing data set in ``dest`` is an error unless ``overwrite=True``, which
    deletes it (its sidecar first, then its files) when writing starts.
    """

    def __init__(
        self,
        dest,
        *,
        nav_shape,
        sig_shape,
        dtype,
        partition_bytes: int = DEFAULT_FILE_BYTES,
        metadata: Optional[dict] = None,
        overwrite: bool = False,
    ):
        self.dest = os.path.abspath(os.fspath(dest))
        self.nav_shape = parse_shape("nav_shape", nav_shape, (1, 2))
        self.sig_shape = parse_shape("sig_shape", sig_shape, (2,))
        self.dtype = parse_dtype(dtype)
        if int(partition_bytes) != partition_bytes or partition_bytes <= 0:
            raise DataSetError(
                f"partition_bytes must be a positive number of bytes, got {partition_bytes!r}"
            )
        self.metadata = jsonable(dict(metadata or {}))
        self.overwrite = bool(overwrite)
        self.n_frames = math.prod(self.nav_shape)
        self.frame_bytes = math.prod(self.sig_shape) * self.dtype.itemsize
        self.frames_per_file = max(1, int(partition_bytes) // self.frame_bytes)
        self.frames_written = 0
        self._parts: list[dict] = []
        self._file = None  # the open tmp file of the current part
        self._hash = None
        self._current: Optional[dict] = None
        self._state = "new"  # new -> writing -> closed | aborted
        self._created_dest = False

    # -- lifecycle
    def __enter__(self) -> "RawPartitionWriter":
        self._start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    @property
    def sidecar_path(self) -> str:
        """Where ``dataset.json`` is published."""
        return os.path.join(self.dest, SIDECAR_NAME)

    def _start(self) -> None:
        if self._state != "new":
            if self._state == "writing":
                return
            raise DataSetError(f"this writer is {self._state}; create a new RawPartitionWriter")
        if os.path.exists(self.dest) and not os.path.isdir(self.dest):
            raise DataSetError(f"{self.dest!r} is a file; pass a directory path as dest")
        if os.path.exists(self.sidecar_path):
            if not self.overwrite:
                raise DataSetError(
                    f"{self.dest!r} already holds a data set ({SIDECAR_NAME}); pass "
                    f"overwrite=True to replace it, or choose another directory"
                )
            self._remove_old_dataset()
        if not os.path.isdir(self.dest):
            os.makedirs(self.dest)
            self._created_dest = True
        for name in os.listdir(self.dest):  # leftovers of an interrupted writer
            if _TMP_PART.match(name):
                os.remove(os.path.join(self.dest, name))
        self._state = "writing"

    def _remove_old_dataset(self) -> None:
        try:
            with open(self.sidecar_path, encoding="utf-8") as f:
                old = [p.get("file") for p in json.load(f).get("partitions", [])]
        except (OSError, ValueError, AttributeError, TypeError):
            old = []
        os.remove(self.sidecar_path)
        for name in old:
            plain = isinstance(name, str) and os.path.basename(name) == name
            if plain and name not in ("", ".", ".."):
                try:
                    os.remove(os.path.join(self.dest, name))
                except (FileNotFoundError, IsADirectoryError):
                    pass

    # -- writing
    def write(self, block) -> None:
        """Append frames ``(n, sig_y, sig_x)`` of the declared dtype."""
        self._start()
        if not isinstance(block, np.ndarray):
            raise DataSetError(
                f"write() takes a numpy array of frames, got {type(block).__name__}; pass "
                f"np.asarray(block)"
            )
        if block.dtype != self.dtype:
            raise DataSetError(
                f"block dtype {block.dtype.str} differs from the declared dtype "
                f"{self.dtype.str}; convert with block.astype({self.dtype.str!r})"
            )
        if block.ndim != 3 or tuple(block.shape[1:]) != self.sig_shape:
            raise DataSetError(
                f"block of shape {block.shape} is not (n, {self.sig_shape[0]}, "
                f"{self.sig_shape[1]}) frames of the declared sig_shape; reshape it to "
                f"(-1, {self.sig_shape[0]}, {self.sig_shape[1]})"
            )
        n = len(block)
        if self.frames_written + n > self.n_frames:
            raise DataSetError(
                f"writing {n} more frames would make {self.frames_written + n}, but "
                f"nav_shape {self.nav_shape} has {self.n_frames}; check nav_shape or the "
                f"blocks written"
            )
        block = np.ascontiguousarray(block)
        pos = 0
        while pos < n:
            if self._file is None:
                self._open_part()
            room = self.frames_per_file - (self._current["stop"] - self._current["start"])
            k = min(room, n - pos)
            data = memoryview(block[pos : pos + k].reshape(-1).view(np.uint8))
            self._file.write(data)
            self._hash.update(data)
            self._current["stop"] += k
            self.frames_written += k
            pos += k
            if k == room:
                self._finish_part()

    def _open_part(self) -> None:
        name = f"part-{len(self._parts):05d}.raw"
        self._current = {"file": name, "start": self.frames_written, "stop": self.frames_written}
        self._file = open(os.path.join(self.dest, name + ".tmp"), "wb")
        self._hash = hashlib.sha256()

    def _finish_part(self) -> None:
        part, f = self._current, self._file
        f.flush()
        os.fsync(f.fileno())
        f.close()
        self._file = None
        path = os.path.join(self.dest, part["file"])
        os.replace(path + ".tmp", path)
        part["bytes"] = (part["stop"] - part["start"]) * self.frame_bytes
        part["sha256"] = self._hash.hexdigest()
        self._parts.append(part)
        self._current = None

    def close(self) -> str:
        """Finish the last file and publish ``dataset.json``; returns its path.

        Fewer frames than ``nav_shape`` holds is an error: the writer aborts and no
        sidecar is published.
        """
        if self._state == "closed":
            return self.sidecar_path
        self._start()
        if self.frames_written != self.n_frames:
            self.abort()
            raise DataSetError(
                f"only {self.frames_written} of the {self.n_frames} frames of nav_shape "
                f"{self.nav_shape} were written to {self.dest!r}, so no {SIDECAR_NAME} was "
                f"published and the partial files were removed; write all frames"
            )
        try:
            if self._file is not None:
                self._finish_part()
            doc = {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "nav_shape": list(self.nav_shape),
                "sig_shape": list(self.sig_shape),
                "dtype": self.dtype.str,
                "partitions": self._parts,
                "metadata": self.metadata,
            }
            validate_sidecar(doc, self.sidecar_path)
            tmp = self.sidecar_path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.sidecar_path)
        except BaseException:
            self.abort()
            raise
        self._state = "closed"
        return self.sidecar_path

    def abort(self) -> None:
        """Stop writing and remove every file this writer created; no sidecar."""
        if self._state in ("closed", "aborted"):
            return
        self._state = "aborted"
        if self._file is not None:
            self._file.close()
            self._file = None
        names = [p["file"] for p in self._parts]
        if self._current is not None:
            names.append(self._current["file"] + ".tmp")
        names.append(SIDECAR_NAME + ".tmp")
        for name in names:
            try:
                os.remove(os.path.join(self.dest, name))
            except FileNotFoundError:
                pass
        self._parts, self._current = [], None
        if self._created_dest:
            try:
                os.rmdir(self.dest)
            except OSError:
                pass


def write_raw_partitions(
    dest,
    data,
    *,
    partition_bytes: int = DEFAULT_FILE_BYTES,
    block_bytes: int = 64 * 2**20,
    nav_shape=None,
    metadata: Optional[dict] = None,
    overwrite: bool = False,
) -> RawPartitionDataSet:
    """Write a :class:`DataSet`, or a numpy / dask array of frames, as raw partitions.

    Frames stream through the data set's own reader in blocks of about ``block_bytes``
    (aligned to its chunks), so memory stays bounded whatever the data size. The
    metadata defaults to a description of the source. Returns the written data set,
    opened.
    """
    if isinstance(data, DataSet):
        ds = data
    else:
        from .memory import open_memory

        ds = open_memory(data)
    if metadata is None:
        metadata = {"source": ds.describe()}
    align = max(1, ds.source.frame_alignment)
    per_block = max(1, int(block_bytes) // ds.frame_bytes)
    per_block = max(align, per_block // align * align)
    writer = RawPartitionWriter(
        dest,
        nav_shape=ds.nav_shape if nav_shape is None else nav_shape,
        sig_shape=ds.sig_shape,
        dtype=ds.dtype,
        partition_bytes=partition_bytes,
        metadata=metadata,
        overwrite=overwrite,
    )
    reader: Optional[FrameReader] = None
    try:
        with writer:
            for start in range(0, ds.n_frames, per_block):
                stop = min(ds.n_frames, start + per_block)
                payload = ds._local_payload(start, stop)
                if payload is None:  # files: one reader for all blocks
                    reader = reader or ds.source.open(None)
                    writer.write(reader.read(start, stop))
                else:
                    with ds.source.open(payload) as block_reader:
                        writer.write(block_reader.read(start, stop))
    finally:
        if reader is not None:
            reader.close()
    return open_raw_partitions(dest)


PLUGIN = register_reader(
    ReaderPlugin(
        name="raw_partitions",
        open=open_raw_partitions,
        suffixes=(".json",),
        sniff=_sniff_raw_partitions,
        description="stem_explorer raw partition directory (dataset.json + part-*.raw)",
    ),
    replace=True,
)

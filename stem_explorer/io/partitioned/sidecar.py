"""The sidecar ``dataset.json`` of a raw partition data set: its schema, validation,
layout checks, and checks of the partition files against it."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from functools import lru_cache
from importlib import resources
from typing import Any, Sequence

import numpy as np

from ...errors import ChecksumError, DataSetError, DataSetNotFoundError, FormatError
from ..raw import parse_dtype

FORMAT_NAME = "stem_explorer.raw_partitions"
#: Version of uncompressed data sets (unchanged since the format began).
FORMAT_VERSION = 1
#: Version of compressed data sets: a reader of version 1 only refuses them by number.
COMPRESSED_VERSION = 2
SIDECAR_NAME = "dataset.json"
_HASH_BLOCK = 8 * 2**20


@lru_cache(maxsize=1)
def sidecar_schema() -> dict:
    """The JSON Schema (draft 2020-12) of ``dataset.json``."""
    schema = resources.files("stem_explorer.io") / "schemas" / "raw_partitions.schema.json"
    text = schema.read_text()
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
        and doc.get("version") not in (FORMAT_VERSION, COMPRESSED_VERSION)
    ):
        raise FormatError(
            f"{where} is raw partition format version {doc.get('version')!r}, but this "
            f"stem_explorer reads versions {FORMAT_VERSION} and {COMPRESSED_VERSION}; upgrade stem_explorer"
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
    codec = doc.get("codec")
    names = [p["file"] for p in parts]
    if len(set(names)) != len(names):
        dup = sorted(n for n, count in Counter(names).items() if count > 1)
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
        if codec is None:
            want = (p["stop"] - p["start"]) * frame_bytes
            if p["bytes"] != want:
                raise FormatError(
                    f"{where}: partition {p['file']} records {p['bytes']} bytes but frames "
                    f"{p['start']}:{p['stop']} of {tuple(doc['sig_shape'])} {dtype.str} take "
                    f"{want} bytes; {fix}"
                )
        else:
            _check_chunks(p, codec["chunk_frames"], where, fix)
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


def _check_chunks(p: dict, chunk_frames: int, where: str, fix: str) -> None:
    """A compressed file starts on a chunk boundary, lists one size and checksum per
    chunk, and its size is their sum."""
    n_chunks = math.ceil((p["stop"] - p["start"]) / chunk_frames)
    problem = None
    if p["start"] % chunk_frames:
        problem = f"starts at frame {p['start']}, not at a multiple of codec.chunk_frames {chunk_frames}"
    elif len(p["chunk_bytes"]) != n_chunks or len(p["chunk_crc32c"]) != n_chunks:
        problem = (f"lists {len(p['chunk_bytes'])} chunk sizes and {len(p['chunk_crc32c'])} checksums, but "
                   f"frames {p['start']}:{p['stop']} make {n_chunks} chunks of {chunk_frames} frames")
    elif sum(p["chunk_bytes"]) != p["bytes"]:
        problem = f"records {p['bytes']} bytes but its chunks add up to {sum(p['chunk_bytes'])}"
    if problem:
        raise FormatError(f"{where}: partition {p['file']} {problem}; {fix}")


def sidecar_document(nav_shape, sig_shape, dtype, partitions: list, metadata: dict, layout=None) -> dict:
    """The ``dataset.json`` of a data set (version 1, or 2 with ``layout``, the
    :class:`~.codecs.ChunkLayout` of compressed files)."""
    doc = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION if layout is None else COMPRESSED_VERSION,
        "nav_shape": list(nav_shape),
        "sig_shape": list(sig_shape),
        "dtype": np.dtype(dtype).str,
        "partitions": partitions,
        "metadata": metadata,
    }
    if layout is not None:
        doc["codec"] = layout.to_sidecar()
    return doc


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
    return directory, parse_sidecar(text, repr(sidecar))


def parse_sidecar(text: str, where: str) -> dict:
    """``dataset.json``'s ``text`` parsed and checked (partitions sorted by start), or a
    FormatError naming ``where``; shared by local and HDFS data sets."""
    try:
        doc = json.loads(text)
        validate_sidecar(doc, where)
    except json.JSONDecodeError as exc:
        raise FormatError(
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno}; fix the file or re-ingest the data set"
        ) from None
    except RecursionError:
        raise FormatError(
            f"{where} is nested too deeply to read (lists or objects inside each other "
            f"beyond Python's recursion limit): it is damaged or not a stem_explorer "
            f"sidecar; re-ingest the data set"
        ) from None
    _dtype, doc["partitions"] = _check_layout(doc, where)
    return doc


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

"""The checkpoint file: a job's merged accumulators and finished partitions on disk.

Layout::

    MAGIC                 16 bytes
    header length         8 bytes, little-endian unsigned
    header                JSON, UTF-8
    arrays                each array's bytes in C order, one after the other
    digest                32 bytes: BLAKE2b-256 of everything before it

The header holds ``identity`` (what the checkpoint was made for), ``layout`` (the
partitions' ``[start, stop]``), ``done`` (indices of the merged partitions),
``accumulators`` (a tree, below) and ``arrays`` (``dtype``, ``shape`` and ``nbytes``
of each array, in file order).

An accumulator is whatever an op merges into: arrays, numbers, tuples, lists, dicts
and None. The tree writes JSON's own values (None, booleans, integers, strings) as
they are and everything else as a one-key object: ``{"a": i}`` the i-th array,
``{"s": i}`` a numpy scalar (the i-th array, 0-d), ``{"f": float.hex()}`` a float
(bit for bit, NaN included), ``{"t": [...]}`` a tuple, ``{"l": [...]}`` a list and
``{"d": [[key, value], ...]}`` a dict. Nothing is pickled: reading a checkpoint never
runs code, and arrays come back as plain numbers (no object dtype).

Writes are atomic (``stem_explorer._atomic.atomic_write``: a temporary beside
the target, flushed, renamed over it). A file that does not start with :data:`MAGIC`
is not a checkpoint and raises :class:`~stem_explorer.errors.CheckpointError`; one
that does but whose digest or structure is wrong raises :class:`CheckpointDamaged`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write
from ..errors import CheckpointError

#: The first bytes of every checkpoint file.
MAGIC = b"STEM-EXPLORER-CP"
VERSION = 1
_LENGTH = struct.Struct("<Q")
_DIGEST_BYTES = 32
#: Array kinds a checkpoint stores: booleans, integers, floats, complex numbers.
_KINDS = "biufc"


class CheckpointDamaged(CheckpointError):
    """A checkpoint file of stem_explorer whose bytes are damaged (truncated, altered)."""


@dataclass
class CheckpointState:
    """What a checkpoint file holds."""

    identity: dict
    layout: list  # [(start, stop), ...] of every partition
    done: list  # indices of the partitions merged into the accumulators
    accumulators: list


def write_checkpoint(path, state: CheckpointState) -> None:
    """Write ``state`` to ``path`` atomically.

    Raises
    ------
    CheckpointError
        An accumulator holds a value a checkpoint cannot store.
    SaveError
        ``path`` cannot be written.
    """
    arrays: list[np.ndarray] = []
    tree = [_encode(acc, arrays) for acc in state.accumulators]
    header = {
        "version": VERSION,
        "identity": state.identity,
        "layout": [[int(a), int(b)] for a, b in state.layout],
        "done": sorted(int(i) for i in state.done),
        "accumulators": tree,
        "arrays": [{"dtype": a.dtype.str, "shape": list(a.shape), "nbytes": a.nbytes} for a in arrays],
    }
    blob = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    digest = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        for chunk in [MAGIC, _LENGTH.pack(len(blob)), blob, *(_bytes_of(a) for a in arrays)]:
            digest.update(chunk)
            f.write(chunk)
        f.write(digest.digest())


def _bytes_of(array: np.ndarray) -> np.ndarray:
    """The array's bytes in C order, without a copy where it is contiguous."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def is_checkpoint(path) -> bool:
    """Whether ``path`` is a file that starts like a checkpoint of stem_explorer."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_checkpoint(path) -> CheckpointState:
    """The state in the checkpoint file ``path``.

    Raises
    ------
    CheckpointError
        ``path`` is not a checkpoint of stem_explorer (or cannot be read).
    CheckpointDamaged
        It is one, but damaged.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder; give a file path for the checkpoint") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {os.strerror(exc.errno or 0) or exc}; "
                              f"fix its permissions or choose another checkpoint path") from None
    if not data.startswith(MAGIC):
        raise CheckpointError(
            f"{str(path)!r} is not a checkpoint of stem_explorer (it does not start with one's marker), so it "
            f"is left as it is; move it away or choose another checkpoint path"
        )
    try:
        return _parse(data)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError, struct.error) as exc:
        raise CheckpointDamaged(f"checkpoint {str(path)!r} is damaged ({exc})") from None


def _parse(data: bytes) -> CheckpointState:
    body, digest = data[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
    if len(data) < len(MAGIC) + _LENGTH.size + _DIGEST_BYTES:
        raise ValueError(f"it is {len(data)} bytes, shorter than any checkpoint")
    if hashlib.blake2b(body, digest_size=_DIGEST_BYTES).digest() != digest:
        raise ValueError("its checksum does not match its bytes: it is truncated or altered")
    (length,) = _LENGTH.unpack_from(body, len(MAGIC))
    start = len(MAGIC) + _LENGTH.size
    if length > len(body) - start:
        raise ValueError("its header runs past the end of the file")
    header = json.loads(body[start : start + length])
    if not isinstance(header, dict) or header.get("version") != VERSION:
        raise ValueError(f"unknown checkpoint version {header.get('version') if isinstance(header, dict) else None!r}")
    arrays = _arrays(header["arrays"], body, start + length)
    identity = header["identity"]
    if not isinstance(identity, dict):
        raise ValueError("its identity is not an object")
    layout = [_pair(item) for item in _list(header["layout"], "layout")]
    done = [_whole(i, "done") for i in _list(header["done"], "done")]
    accumulators = [_decode(node, arrays) for node in _list(header["accumulators"], "accumulators")]
    return CheckpointState(identity, layout, done, accumulators)


def _arrays(specs, body: bytes, offset: int) -> list:
    arrays = []
    for spec in _list(specs, "arrays"):
        dtype = np.dtype(str(spec["dtype"]))
        if dtype.kind not in _KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise ValueError(f"array dtype {spec['dtype']!r} is not a number type")
        shape = tuple(_whole(n, "shape") for n in _list(spec["shape"], "shape"))
        nbytes = _whole(spec["nbytes"], "nbytes")
        if nbytes != math.prod(shape) * dtype.itemsize or nbytes > len(body) - offset:
            raise ValueError(f"array of shape {shape} and {nbytes} bytes does not fit the file")
        arrays.append(np.frombuffer(body, dtype, math.prod(shape), offset).reshape(shape).copy())
        offset += nbytes
    if offset != len(body):
        raise ValueError(f"{len(body) - offset} bytes after the last array")
    return arrays


def _list(value, what: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"{what} is not a list")
    return value


def _whole(value, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{what} holds {value!r}, not a whole number")
    return value


def _pair(item) -> tuple:
    start, stop = (_whole(v, "layout") for v in _list(item, "layout"))
    return start, stop


def _encode(value: Any, arrays: list) -> Any:
    if value is None or isinstance(value, (bool, str)) or type(value) is int:
        return value
    if isinstance(value, float):
        return {"f": float(value).hex()}
    if isinstance(value, (np.ndarray, np.generic)) and np.dtype(value.dtype).kind in _KINDS:
        arrays.append(np.asarray(value))
        return {"a" if isinstance(value, np.ndarray) else "s": len(arrays) - 1}
    if isinstance(value, (tuple, list)):
        return {"t" if isinstance(value, tuple) else "l": [_encode(v, arrays) for v in value]}
    if isinstance(value, dict):
        return {"d": [[_encode(k, arrays), _encode(v, arrays)] for k, v in value.items()]}
    raise CheckpointError(
        f"a checkpoint cannot store an accumulator holding {type(value).__name__} values (it stores "
        f"numpy arrays of numbers, numbers, strings, None, tuples, lists and dicts of them); run this "
        f"analysis without a checkpoint, or keep its state in those types"
    )


def _decode(node: Any, arrays: list) -> Any:
    if node is None or isinstance(node, (bool, int, str)):
        return node
    if not isinstance(node, dict) or len(node) != 1:
        raise ValueError(f"unknown tree node {str(node)[:80]!r}")
    ((tag, value),) = node.items()
    if tag == "f":
        return float.fromhex(value)
    if tag == "a":
        return arrays[_whole(value, "array index")]
    if tag == "s":
        return arrays[_whole(value, "array index")][()]
    if tag in ("t", "l"):
        items = [_decode(v, arrays) for v in _list(value, tag)]
        return tuple(items) if tag == "t" else items
    if tag == "d":
        return {_hashable(_decode(k, arrays)): _decode(v, arrays) for k, v in (_pair_of(item) for item in _list(value, "d"))}
    raise ValueError(f"unknown tree tag {tag!r}")


def _pair_of(item) -> tuple:
    key, value = _list(item, "dict item")
    return key, value


def _hashable(key):
    hash(key)  # a list or dict key (only a damaged file has one) is a TypeError
    return key

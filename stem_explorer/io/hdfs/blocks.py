"""Short-circuit reads: blocks that this node's DataNode stores, read from its disk.

A worker on a DataNode's host finds the node's block folders in its Hadoop
configuration (:func:`~.config.local_data_dirs`) and maps a finalized block file
(``<dir>/current/<pool>/current/finalized/subdirX/subdirY/blk_<id>``, the layout of
Hadoop 2.6 and later) instead of streaming it through the DataNode: the same bytes
at the speed of a local file. This needs read access to those folders
(``dfs.datanode.data.dir.perm``, e.g. 750 with the analysis users in the HDFS group);
without it, or for blocks stored elsewhere, reads go through WebHDFS.

HDFS keeps a CRC per 512 bytes of every block in ``blk_<id>_<genstamp>.meta``; a
block file is checked against it the first time a process maps it (the mapping is
then kept, see :func:`stem_explorer.io.raw.map_frames`), so a corrupt replica on
disk is noticed and read from another DataNode instead, as HDFS itself would.
"""

from __future__ import annotations

import logging
import os
import struct
from typing import Optional

import numba
import numpy as np

from ..raw import _mapping
from .config import local_data_dirs
from .webhdfs import Block

log = logging.getLogger(__name__)

#: HDFS checksum types (``DataChecksum.Type``) and their reflected polynomials.
_POLYNOMIALS = {1: 0xEDB88320, 2: 0x82F63B78}  # CRC32 (zlib), CRC32C (Castagnoli)
_META_HEADER = struct.Struct(">hbi")  # version, checksum type, bytes per checksum

_VERIFIED: set = set()  # block files whose CRCs matched in this process
_CORRUPT: set = set()


def block_path(data_dir: str, block: Block) -> str:
    """Where a finalized block lives under one DataNode data folder."""
    bid = block.block_id
    sub = f"subdir{(bid >> 16) & 0x1F}/subdir{(bid >> 8) & 0x1F}"
    return os.path.join(data_dir, "current", block.pool_id, "current", "finalized", sub, f"blk_{bid}")


def local_block(block: Block, verify: bool = True) -> Optional[np.ndarray]:
    """A read-only byte mapping of ``block`` when this node stores it whole (same
    generation and length), else None. With ``verify`` its CRCs are checked on first
    use in this process; a mismatch marks it corrupt and returns None."""
    if block.block_id is None:
        return None
    for data_dir in local_data_dirs():
        path = block_path(data_dir, block)
        meta = f"{path}_{block.generation}.meta"
        try:
            stat = os.stat(path)
            if stat.st_size != block.length or not os.path.exists(meta):
                continue
            key = (path, stat.st_ino, stat.st_size, stat.st_mtime_ns)
            if key in _CORRUPT:
                return None
            mapped = _mapping(path, stat)
            if verify and key not in _VERIFIED:
                bad = first_bad_chunk(mapped, meta)
                if bad is not None:
                    _CORRUPT.add(key)
                    log.warning("block file %s fails its CRC at byte %d; reading another replica", path, bad)
                    return None
                _VERIFIED.add(key)
            return mapped
        except OSError:  # not readable by this user, or gone meanwhile
            continue
    return None


def first_bad_chunk(data: np.ndarray, meta_path: str) -> Optional[int]:
    """Offset of the first checksum chunk of ``data`` whose CRC differs from the
    ``.meta`` file's, or None when all match (or the meta file records no CRCs)."""
    with open(meta_path, "rb") as f:
        version, kind, per_chunk = _META_HEADER.unpack(f.read(_META_HEADER.size))
        if kind not in _POLYNOMIALS:
            return None  # checksum type NULL: nothing recorded
        n_chunks = -(-len(data) // per_chunk)
        expected = np.frombuffer(f.read(4 * n_chunks), ">u4").astype(np.int64)
    if len(expected) != n_chunks:
        return 0
    bad = _first_bad(data, per_chunk, expected, _tables(kind))
    return None if bad < 0 else bad * per_chunk


_TABLES: dict = {}


def _tables(kind: int) -> np.ndarray:
    """Slicing-by-8 lookup tables of a reflected CRC-32 polynomial, ``(8, 256)``."""
    if kind not in _TABLES:
        poly = _POLYNOMIALS[kind]
        t = np.zeros((8, 256), np.int64)
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ poly if c & 1 else c >> 1
            t[0, i] = c
        for k in range(1, 8):
            t[k] = (t[k - 1] >> 8) ^ t[0, t[k - 1] & 0xFF]
        _TABLES[kind] = t
    return _TABLES[kind]


@numba.njit(cache=True, nogil=True)
def _first_bad(data, per_chunk, expected, t):  # pragma: no cover - compiled
    """Index of the first chunk whose CRC differs from ``expected``, else -1."""
    n = data.size
    for c in range(expected.size):
        i = c * per_chunk
        end = min(n, i + per_chunk)
        crc = np.int64(0xFFFFFFFF)
        while i + 8 <= end:
            lo = crc ^ (np.int64(data[i]) | np.int64(data[i + 1]) << 8
                        | np.int64(data[i + 2]) << 16 | np.int64(data[i + 3]) << 24)
            hi = (np.int64(data[i + 4]) | np.int64(data[i + 5]) << 8
                  | np.int64(data[i + 6]) << 16 | np.int64(data[i + 7]) << 24)
            crc = (t[7, lo & 0xFF] ^ t[6, (lo >> 8) & 0xFF] ^ t[5, (lo >> 16) & 0xFF] ^ t[4, lo >> 24]
                   ^ t[3, hi & 0xFF] ^ t[2, (hi >> 8) & 0xFF] ^ t[1, (hi >> 16) & 0xFF] ^ t[0, hi >> 24])
            i += 8
        while i < end:
            crc = t[0, (crc ^ data[i]) & 0xFF] ^ (crc >> 8)
            i += 1
        if crc ^ 0xFFFFFFFF != expected[c]:
            return c
    return -1

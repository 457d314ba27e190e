"""Frames already in memory: numpy arrays and dask arrays.

The :class:`MemoryFrameSource` that tasks receive holds no frames (it pickles to a few
hundred bytes). The data reaches workers once, as one block per partition:
:meth:`InMemoryDataSet.payloads` scatters numpy blocks, or computes dask blocks on the
cluster, and hands back their futures; the engine passes each future to its task, and
``source.open(block)`` wraps it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import DataSetError
from .base import DataSet, FrameReader, FrameSource, Partition
from .raw import parse_shape
from .registry import ReaderPlugin, register_reader

__all__ = [
    "InMemoryDataSet",
    "MemoryBlock",
    "MemoryFrameReader",
    "MemoryFrameSource",
    "is_dask_array",
    "open_memory",
]


def is_dask_array(obj) -> bool:
    """True for a :class:`dask.array.Array` (without importing dask)."""
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(obj, da.Array)


@dataclass
class MemoryBlock:
    """Frames ``start:start + len(frames)`` of an in-memory data set (a task payload)."""

    start: int
    frames: np.ndarray

    @property
    def stop(self) -> int:
        """Flat index one past the block's last frame."""
        return self.start + len(self.frames)


class MemoryFrameSource(FrameSource):
    """Shape and dtype of in-memory frames; the frames come as the task's payload."""

    random_access = True

    def __init__(self, n_frames: int, sig_shape: Sequence[int], dtype):
        self.n_frames = int(n_frames)
        self.sig_shape = tuple(int(n) for n in sig_shape)
        self.dtype = np.dtype(dtype)

    def open(self, payload: Optional[MemoryBlock] = None) -> "MemoryFrameReader":
        """Wrap the partition's :class:`MemoryBlock` (from ``DataSet.payloads``)."""
        if not isinstance(payload, MemoryBlock):
            raise DataSetError(
                "in-memory frames reach a task as its payload, but none was given; pass "
                "the futures from DataSet.payloads(client, partitions) to the tasks"
            )
        return MemoryFrameReader(payload)



class MemoryFrameReader(FrameReader):
    """Zero-copy views of one :class:`MemoryBlock`."""

    def __init__(self, block: MemoryBlock):
        self.block = block

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop``; they must lie inside this reader's block."""
        b = self.block
        if not b.start <= start <= stop <= b.stop:
            raise DataSetError(
                f"frames {start}:{stop} are outside this task's in-memory block "
                f"{b.start}:{b.stop}; read only the partition's own frames"
            )
        return b.frames[start - b.start : stop - b.start]

    def close(self) -> None:
        """Drop the reference to the block."""


class InMemoryDataSet(DataSet):
    """A :class:`DataSet` over a numpy or dask array held by this process."""

    def __init__(self, frames, nav_shape: Sequence[int], *, metadata: Optional[dict] = None):
        """``frames`` is ``(n_frames, sig_y, sig_x)`` (numpy or dask)."""
        source = MemoryFrameSource(frames.shape[0], frames.shape[1:], frames.dtype)
        super().__init__(source, nav_shape, format="memory", metadata=metadata)
        self._frames = frames

    @property
    def is_dask(self) -> bool:
        """Whether the frames are a (lazy) dask array."""
        return is_dask_array(self._frames)

    def payloads(self, client, partitions: Sequence[Partition]) -> list:
        """One future per partition holding its :class:`MemoryBlock`.

        numpy blocks are scattered to the cluster (each block once, not the whole array
        per task); dask arrays are rechunked along the frame axis to the partition
        boundaries and each block is computed on the cluster.
        """
        partitions = list(partitions)
        if not partitions:
            return []
        if not self.is_dask:
            blocks = [MemoryBlock(p.start, self._frames[p.start : p.stop]) for p in partitions]
            return client.scatter(blocks, hash=False)
        import dask

        bounds = sorted({0, self.n_frames}.union(*((p.start, p.stop) for p in partitions)))
        chunks = tuple(int(b - a) for a, b in zip(bounds[:-1], bounds[1:]))
        frames = self._frames.rechunk({0: chunks, 1: -1, 2: -1})
        make_block = dask.delayed(MemoryBlock, pure=True)
        blocks = [make_block(p.start, frames[p.start : p.stop]) for p in partitions]
        return client.compute(blocks)

    @property
    def random_access_here(self) -> bool:
        """numpy frames are here; dask frames would be computed first."""
        return not self.is_dask

    def local_payload(self, start: int, stop: int) -> MemoryBlock:
        frames = self._frames[start:stop]
        if self.is_dask:
            frames = frames.compute()
        return MemoryBlock(start, np.asarray(frames))


def open_memory(array: Any, *, nav_shape=None) -> InMemoryDataSet:
    """Wrap a numpy or dask array of frames.

    3-D arrays are ``(frames, sig_y, sig_x)`` with ``nav_shape=(frames,)``; 4-D arrays
    are ``(scan_y, scan_x, sig_y, sig_x)``. ``nav_shape`` reshapes the scan (its product
    must equal the number of frames). The array is not copied.
    """
    if not is_dask_array(array):
        if not isinstance(array, np.ndarray):
            raise DataSetError(
                f"expected a numpy or dask array, got {type(array).__name__}; wrap it "
                f"with np.asarray(...) first"
            )
    dtype = np.dtype(array.dtype)
    if dtype.kind not in "biufc" or dtype.fields is not None:
        raise DataSetError(
            f"array holds {dtype} values, not numbers; convert it with "
            f"array.astype(np.float32) (or an integer type)"
        )
    if array.ndim not in (3, 4):
        raise DataSetError(
            f"array has shape {array.shape} ({array.ndim}-D); frames must be 3-D "
            f"(frames, sig_y, sig_x) or 4-D (scan_y, scan_x, sig_y, sig_x); reshape it"
        )
    if any(n == 0 for n in array.shape):
        raise DataSetError(f"array of shape {array.shape} holds no data")
    sig_shape = tuple(int(n) for n in array.shape[-2:])
    nav = tuple(int(n) for n in array.shape[:-2])
    frames = array.reshape((-1,) + sig_shape) if array.ndim == 4 else array
    if nav_shape is not None:
        nav = parse_shape("nav_shape", nav_shape, (1, 2))
    kind = "dask" if is_dask_array(array) else "numpy"
    return InMemoryDataSet(frames, nav, metadata={"array": kind, "read_path": "memory"})


PLUGIN = register_reader(
    ReaderPlugin(
        name="memory",
        open=open_memory,
        suffixes=(),
        description="numpy or dask arrays held in memory",
    ),
    replace=True,
)

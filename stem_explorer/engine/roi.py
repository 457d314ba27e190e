"""Scan regions of interest: which frames a job reads, and how a task reads only them.

A job reads every frame unless its ROI (``Session.run(..., roi=...)``) or its ops say
otherwise: an op that needs only some frames (:class:`~stem_explorer.engine.PickFrames`,
:class:`~stem_explorer.engine.NavMaskedSum`) declares them (:meth:`~stem_explorer.engine.Op.frames_needed`), and a
plan whose every op does reads only their union. The job then schedules only the
partitions that hold such frames (:func:`select_partitions`), and each task reads
only the blocks of frames that contain them (:func:`read_blocks`): runs of wanted
frames, widened to the storage's chunks (``frame_alignment``) so that a compressed
chunk is decoded once even when several runs fall in it. The ops are fed each run of
consecutive wanted frames as a tile of its own, so every op (per-frame or reduction)
works unchanged and sees only wanted frames: per-frame outputs stay NaN elsewhere and
reductions cover only the ROI.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from ..io.base import Partition


def plan_frames(ops: Sequence, roi: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """The sorted flat indices of the frames a plan of ``ops`` reads, or None for all.

    ``roi`` (sorted unique flat indices, or None) limits every op; without it the plan
    reads the union of what its ops declare, or everything when one op needs every
    frame.
    """
    needed = [op.frames_needed() for op in ops]
    frames = None if any(n is None for n in needed) or not needed else np.unique(np.concatenate(needed))
    if roi is None:
        return frames
    roi = np.asarray(roi, np.int64)
    return roi if frames is None else np.intersect1d(roi, frames, assume_unique=True)


def select_partitions(partitions: Sequence[Partition], frames: Optional[np.ndarray]) -> tuple[list, list]:
    """``(partitions, frames of each)``: the partitions holding any of the sorted flat
    ``frames`` (renumbered from 0: a partition's index is its place in the job) and the
    part of ``frames`` each holds; all partitions and ``None`` each when ``frames`` is
    None."""
    if frames is None:
        return list(partitions), [None] * len(partitions)
    kept, pieces = [], []
    for part in partitions:
        inside = frames_in(frames, part)
        if inside.size:
            kept.append(dataclasses.replace(part, index=len(kept)))
            pieces.append(inside)
    return kept, pieces


def frames_in(frames: np.ndarray, partition: Partition) -> np.ndarray:
    """The part of the sorted flat ``frames`` inside ``partition``."""
    lo, hi = np.searchsorted(frames, [partition.start, partition.stop])
    return frames[lo:hi]


def runs_of(frames: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of each run of consecutive values of the sorted ``frames``."""
    if frames.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(frames) != 1) + 1
    starts = frames[np.concatenate([[0], breaks])]
    stops = frames[np.concatenate([breaks - 1, [frames.size - 1]])] + 1
    return list(zip(starts.tolist(), stops.tolist()))


def read_blocks(frames: np.ndarray, stop: int, alignment: int, tile_frames: int) -> list[tuple[int, int, list]]:
    """How a task reads the sorted flat ``frames`` of a partition ending at ``stop``:
    ``(block start, block stop, runs)`` where each block is one read, its bounds on
    multiples of ``alignment`` (or at ``stop``), at most ``tile_frames`` frames unless a
    single chunk is larger, and ``runs`` the ``(start, stop)`` runs of wanted frames
    inside it, in order.

    Runs whose chunks touch or overlap share a block (so a chunk is read and decoded
    once); runs separated by whole chunks of unwanted frames are separate reads, so
    those chunks are never read.
    """
    align = max(1, int(alignment))
    step = max(align, int(tile_frames) // align * align)
    blocks: list = []
    for a, b in _split(runs_of(frames), step):
        lo, hi = a // align * align, min(stop, -(-b // align) * align)
        if blocks and lo <= blocks[-1][1] and max(hi, blocks[-1][1]) - blocks[-1][0] <= step:
            block = blocks[-1]
            block[1] = max(hi, block[1])
            block[2].append((a, b))
        else:
            blocks.append([lo, hi, [(a, b)]])
    return [(lo, hi, runs) for lo, hi, runs in blocks]


def _split(runs: list, step: int) -> list:
    """``runs`` cut at multiples of ``step`` (so no run is longer than a tile)."""
    out = []
    for a, b in runs:
        while a < b:
            cut = min(b, (a // step + 1) * step)
            out.append((a, cut))
            a = cut
    return out


def runs_description(frames: Optional[np.ndarray]) -> Optional[list]:
    """The ``[start, stop]`` runs of ``frames`` as plain lists, for provenance (a
    rectangle of a raster scan is one run per row, not one index per frame)."""
    return None if frames is None else [list(run) for run in runs_of(np.asarray(frames, np.int64))]

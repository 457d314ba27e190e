"""Warm-up: have the kernels ready before the first task needs them.

:func:`warm_up` runs the ops of the common analyses (:func:`warm_up_plan`, built from
the engine's own pieces) once on tiny read-only frames of the common dtypes (read-only like the memory-mapped tiles of real data, which numba types
separately), so numba loads the kernels' cached machine code (compiling and caching it
on the very first run). :func:`warm_up_in_background` does so in a daemon thread:
embedded LocalCluster workers start it when they start (:mod:`.worker_setup`, their
dask preload), so a worker is ready at once and a task that arrives during the warm-up
waits only for what is left. A :class:`~stem_explorer.session.Session` over data this
process reads cheaply warms the data's dtype here too when its first job ends, after
which jobs compute their coarse preview in this process (:func:`is_warm` tells whether
the kernels are ready for a dtype). A live job on frames this process records warms
the partitions' kernels here as well (:func:`partitions_warm`), then computes the
acquisition's chunks in this process.
"""

from __future__ import annotations

import threading
from typing import Optional

import numpy as np
import scipy.sparse

from . import kernels
from .ops import CenterOfMassMoments, FrameMoments, FrameSum, MaskProduct
from .reduced import bin_frames, sum_dtype
from .tasks import DEFAULT_TILE_BYTES, Plan

#: dtypes warmed: counting detectors (uint8, uint16), Merlin 12-bit as stored, float32
WARM_DTYPES = ("uint8", "uint16", ">u2", "float32")


# (dtype, partitions) -> Event, set once this process has warmed the dtype's kernels
# (partitions: those a partition's task runs, not only a preview's)
_warmed: dict = {}
_lock = threading.Lock()


def _event(dtype, partitions: bool) -> threading.Event:
    with _lock:
        return _warmed.setdefault((np.dtype(dtype), partitions), threading.Event())


def _set(dtype, partitions: bool) -> bool:
    event = _warmed.get((np.dtype(dtype), partitions))
    return event is not None and event.is_set()


def is_warm(dtype) -> bool:
    """Whether this process has warmed the kernels of a preview for ``dtype``."""
    return _set(dtype, False) or _set(dtype, True)


def partitions_warm(dtype) -> bool:
    """Whether this process has warmed the kernels of a partition's task for ``dtype``."""
    return _set(dtype, True)


def wait_warm(dtype, timeout: Optional[float] = None) -> bool:
    """Wait for a warm-up of ``dtype`` that has started (False at once if none has)."""
    events = [e for e in (_warmed.get((np.dtype(dtype), p)) for p in (True, False)) if e is not None]
    return bool(events) and events[0].wait(timeout)


def warm_up_in_background(dtypes=WARM_DTYPES, partitions: bool = True) -> None:
    """Start :func:`warm_up` of those ``dtypes`` not started yet (with ``partitions``,
    not started with it), in a daemon thread."""
    with _lock:
        todo = [np.dtype(d) for d in dtypes
                if (np.dtype(d), True) not in _warmed and (partitions or (np.dtype(d), False) not in _warmed)]
        _warmed.update(((d, partitions), threading.Event()) for d in todo)
    if todo:
        threading.Thread(
            target=warm_up, args=(todo, partitions), name="stem-explorer-warm-up", daemon=True
        ).start()


def warm_up(dtypes=WARM_DTYPES, partitions: bool = True) -> None:
    """Run the ops of the common analyses once on a 4 x 4 scan of 8 x 8 frames per
    dtype: as a partition and as a preview, or (``partitions=False``, for the client)
    as a preview only."""
    from ..io import open_dataset
    from ..io.memory import MemoryBlock
    from .tasks import compute_preview, run_local

    for dtype in dtypes:
        data = np.arange(4 * 4 * 8 * 8).reshape(4, 4, 8, 8).astype(dtype)
        data.flags.writeable = False
        ds = open_dataset(data)
        plan = warm_up_plan(np.dtype(dtype))
        parts = ds.partitions(1)
        block = MemoryBlock(0, data.reshape(16, 8, 8))
        if partitions:
            run_local(parts, plan, [block] * len(parts))
            if kernels.swaps_in_kernel(dtype):  # a plan of ops that read tiles as stored: their swapping kernels
                stored = Plan(tuple(op for op in plan.ops if op.reads_stored_order(dtype)), plan.tile_bytes)
                run_local(parts, stored, [block] * len(parts))
            # a full pass keeps the reduced copy too: 2 x 2 bins, the commonest
            bin_frames(data.reshape(16, 64), (8, 8), 2, np.empty((16, 16), sum_dtype(dtype, 4)))
        compute_preview([(parts[0], block, np.array([0, 5]))], plan)
        _event(dtype, partitions).set()


def warm_up_plan(dtype, sig_shape=(8, 8)) -> Plan:
    """The ops the common analyses (virtual detectors, radial profile, centre of mass,
    sum and std frames) plan, built here from the engine's own pieces (the engine
    knows nothing of analyses): a mask product of a disk, a weighted ramp and three
    rings about the centre, the centre-of-mass moments over the whole frame, the frame
    sum and the frame moments. A test checks that they cover the analyses' plan."""
    y, x = np.indices(sig_shape, dtype=np.float64)
    cy, cx = sig_shape[0] / 2, sig_shape[1] / 2
    distance = np.hypot(y - cy, x - cx).ravel()
    ring = np.minimum((distance / distance.max() * 3).astype(int), 2)
    columns = [distance <= 2, np.linspace(0, 1, distance.size)] + [ring == i for i in range(3)]
    matrix = scipy.sparse.csr_matrix(np.stack(columns, axis=1).astype(np.float32))
    everything = np.arange(distance.size)
    ops = (
        CenterOfMassMoments(everything, sig_shape, (cy, cx)),
        FrameSum(),
        FrameMoments(),
        MaskProduct(matrix, dtype=dtype, sig_shape=sig_shape),
    )
    return Plan(ops, DEFAULT_TILE_BYTES)

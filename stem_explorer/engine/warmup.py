"""Warm-up: have the kernels ready before the first task needs them.

:func:`warm_up` runs the common analyses once on tiny read-only frames of the common
dtypes (read-only like the memory-mapped tiles of real data, which numba types
separately), so numba loads the kernels' cached machine code (compiling and caching it
on the very first run). :func:`warm_up_in_background` does so in a daemon thread:
embedded LocalCluster workers start it when they start (:mod:`.worker_setup`, their
dask preload), so a worker is ready at once and a task that arrives during the warm-up
waits only for what is left. A :class:`~stem_explorer.session.Session` over data this
process reads cheaply warms the data's dtype here too when its first job ends, after
which jobs compute their coarse preview in this process (:func:`is_warm` tells whether
the kernels are ready for a dtype).
"""

from __future__ import annotations

import threading
from typing import Optional

import numpy as np

#: dtypes warmed: counting detectors (uint8, uint16), Merlin 12-bit as stored, float32
WARM_DTYPES = ("uint8", "uint16", ">u2", "float32")


_warmed: dict = {}  # dtype -> Event, set once this process has warmed it
_lock = threading.Lock()


def _event(dtype) -> threading.Event:
    with _lock:
        return _warmed.setdefault(np.dtype(dtype), threading.Event())


def is_warm(dtype) -> bool:
    """Whether this process has warmed the kernels for ``dtype``."""
    event = _warmed.get(np.dtype(dtype))
    return event is not None and event.is_set()


def wait_warm(dtype, timeout: Optional[float] = None) -> bool:
    """Wait for a warm-up of ``dtype`` that has started (False at once if none has)."""
    event = _warmed.get(np.dtype(dtype))
    return event is not None and event.wait(timeout)


def warm_up_in_background(dtypes=WARM_DTYPES, partitions: bool = True) -> None:
    """Start :func:`warm_up` of those ``dtypes`` not started yet, in a daemon thread."""
    with _lock:
        todo = [np.dtype(d) for d in dtypes if np.dtype(d) not in _warmed]
        _warmed.update((d, threading.Event()) for d in todo)
    if todo:
        threading.Thread(
            target=warm_up, args=(todo, partitions), name="stem-explorer-warm-up", daemon=True
        ).start()


def warm_up(dtypes=WARM_DTYPES, partitions: bool = True) -> None:
    """Run every common analysis once on a 4 x 4 scan of 8 x 8 frames per dtype: as a
    partition and as a preview, or (``partitions=False``, for the client) as a preview
    only."""
    from .. import masks
    from ..analyses import CenterOfMass, RadialProfile, StdFrame, SumFrame, VirtualDetector, build_plan
    from ..io import open_dataset
    from ..io.memory import MemoryBlock
    from .tasks import compute_preview, run_local

    for dtype in dtypes:
        data = np.arange(4 * 4 * 8 * 8).reshape(4, 4, 8, 8).astype(dtype)
        data.flags.writeable = False
        ds = open_dataset(data)
        analyses = [
            VirtualDetector({"disk": masks.Disk(4, 4, 2), "weighted": masks.Weighted(np.linspace(0, 1, 64).reshape(8, 8))}),
            RadialProfile(center=(4, 4), n_bins=3),
            CenterOfMass(center=(4, 4)),
            SumFrame(),
            StdFrame(),
        ]
        plan, _ = build_plan(analyses, ds)
        parts = ds.partitions(1)
        block = MemoryBlock(0, data.reshape(16, 8, 8))
        if partitions:
            run_local(parts, plan, [block] * len(parts))
        compute_preview([(parts[0], block, np.array([0, 5]))], plan)
        _event(dtype).set()

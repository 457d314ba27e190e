"""Worker warm-up: have the kernels ready before the first task needs them.

Embedded LocalCluster workers start :func:`warm_up` in a daemon thread when they start
(:mod:`.worker_setup`, their dask preload): it runs the common analyses once on tiny
read-only frames of the common dtypes (read-only like the memory-mapped tiles of real data, which numba
types separately), so numba loads the kernels' cached machine code (compiling and
caching it on the very first run) while the worker is otherwise idle. The worker is
ready at once; a task that arrives during the warm-up waits only for what is left.
"""

from __future__ import annotations

import numpy as np

#: dtypes warmed: counting detectors (uint8, uint16), Merlin 12-bit as stored, float32
WARM_DTYPES = ("uint8", "uint16", ">u2", "float32")


def warm_up(dtypes=WARM_DTYPES) -> None:
    """Run every common analysis once on a 4 x 4 scan of 8 x 8 frames per dtype."""
    from .. import masks
    from ..analyses import CenterOfMass, RadialProfile, StdFrame, SumFrame, VirtualDetector, build_plan
    from ..io import open_dataset
    from ..io.memory import MemoryBlock
    from .tasks import run_local, run_preview

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
        run_local(parts, plan, [block] * len(parts))
        run_preview([(parts[0], block, np.array([0, 5]))], plan)

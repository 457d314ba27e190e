"""Jobs over partitions on dask.distributed, and the per-tile kernels they run."""

from .job import Job, JobStats, Progress
from .ops import (
    CenterOfMassMoments,
    FrameMax,
    FrameMoments,
    FrameSum,
    MaskedMoments,
    MaskProduct,
    NavMaskedSum,
    Op,
    PerFrameOp,
    PickFrames,
    choose_kernel,
)
from .tasks import (
    DEFAULT_TILE_BYTES,
    PartitionResult,
    Plan,
    empty_accumulators,
    merge_partition,
    run_local,
    run_partition,
)

__all__ = [
    "CenterOfMassMoments",
    "DEFAULT_TILE_BYTES",
    "FrameMax",
    "FrameMoments",
    "FrameSum",
    "Job",
    "JobStats",
    "MaskProduct",
    "MaskedMoments",
    "NavMaskedSum",
    "Op",
    "PartitionResult",
    "PerFrameOp",
    "PickFrames",
    "Plan",
    "Progress",
    "choose_kernel",
    "empty_accumulators",
    "merge_partition",
    "run_local",
    "run_partition",
]

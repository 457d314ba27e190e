"""stem_explorer: interactive exploration of pixelated 4D-STEM data on dask.distributed.

Open data with :func:`open_dataset`, describe masks with :mod:`stem_explorer.masks`,
and run analyses (:mod:`stem_explorer.analyses`) in a :class:`Session`::

    import stem_explorer as se
    with se.Session("scan.h5") as session:
        job = session.run(se.VirtualDetector(se.masks.Disk(64, 64, 12)))
        for progress in job:            # partial results as partitions finish
            print(f"{progress.fraction:.0%}")
        job.result().save("bf.h5")
"""

from ._version import __version__
from . import masks
from .analyses import (
    FEM,
    CenterOfMass,
    Descan,
    MaxFrame,
    MeanFrame,
    PickFrame,
    RadialProfile,
    RoiSum,
    StdFrame,
    SumFrame,
    VirtualDetector,
)
from .errors import StemExplorerError
from .io import DataSet, open_dataset
from .engine.ingestion import ingest
from .results import ResultArray, Results
from .session import Session
from .batch import batch  # the function; the subpackage stays importable as stem_explorer.batch.<module>

__all__ = [
    "FEM",
    "CenterOfMass",
    "DataSet",
    "Descan",
    "MaxFrame",
    "MeanFrame",
    "PickFrame",
    "RadialProfile",
    "ResultArray",
    "Results",
    "RoiSum",
    "Session",
    "StdFrame",
    "StemExplorerError",
    "SumFrame",
    "VirtualDetector",
    "__version__",
    "batch",
    "ingest",
    "masks",
    "open_dataset",
]

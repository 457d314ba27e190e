"""What users ask for: each analysis is a small class with its parameters as fields.

Run them with :meth:`stem_explorer.Session.run`; all analyses of one run share one pass
over the data.
"""

from .base import Analysis, MaskColumns
from .com import CenterOfMass
from .fem import FEM
from .frames import MaxFrame, MeanFrame, PickFrame, RoiSum, StdFrame, SumFrame
from .plan import build_plan
from .virtual import RadialProfile, VirtualDetector

__all__ = [
    "FEM",
    "Analysis",
    "CenterOfMass",
    "MaskColumns",
    "MaxFrame",
    "MeanFrame",
    "PickFrame",
    "RadialProfile",
    "RoiSum",
    "StdFrame",
    "SumFrame",
    "VirtualDetector",
    "build_plan",
]

"""What users ask for: a registry of analyses, each one declaration of its parameters.

Run them with :meth:`stem_explorer.Session.run`; all analyses of one run share one pass
over the data. Every analysis round-trips through JSON (``from_dict(a.to_dict()) ==
a``) and is found by name (:func:`available`, :func:`get`); packages add analyses
through the ``stem_explorer.analyses`` entry point group, notebooks with
:func:`register`. Write your own per-frame or per-tile work with
:class:`FrameAnalysis`, or a reduction with a merge with :class:`ReductionAnalysis`
(see docs/extending.md).
"""

from .base import Analysis, MaskColumns
from .com import CenterOfMass
from .corrections import CorrectionGuess, guess_corrections
from .custom import FrameAnalysis, ReductionAnalysis
from .descan import Descan
from .fem import FEM
from .frames import MaxFrame, MeanFrame, PickFrame, RoiSum, StdFrame, SumFrame
from .params import REQUIRED, Boolean, Choice, Integer, Label, Number, Numbers, Param, Point
from .region_params import MaskParam, Masks, Positions, ScanRoi
from .plan import build_plan
from .recipe import load_recipe
from .registry import (
    ENTRY_POINT_GROUP,
    REGISTRY,
    AnalysisPluginWarning,
    AnalysisRegistry,
    available,
    from_dict,
    from_results,
    get,
    register,
)
from .virtual import RadialProfile, VirtualDetector

__all__ = [
    "ENTRY_POINT_GROUP",
    "FEM",
    "FrameAnalysis",
    "REGISTRY",
    "REQUIRED",
    "Analysis",
    "AnalysisPluginWarning",
    "AnalysisRegistry",
    "Boolean",
    "CenterOfMass",
    "Choice",
    "CorrectionGuess",
    "Descan",
    "Integer",
    "Label",
    "MaskColumns",
    "MaskParam",
    "Masks",
    "MaxFrame",
    "MeanFrame",
    "Number",
    "Numbers",
    "Param",
    "PickFrame",
    "Point",
    "Positions",
    "RadialProfile",
    "ReductionAnalysis",
    "RoiSum",
    "ScanRoi",
    "StdFrame",
    "SumFrame",
    "VirtualDetector",
    "available",
    "build_plan",
    "from_dict",
    "from_results",
    "get",
    "guess_corrections",
    "load_recipe",
    "register",
]

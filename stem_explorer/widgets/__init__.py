"""Jupyter widgets of stem_explorer (need the ``widgets`` extra: anywidget, ipywidgets, bqplot).

- :class:`Explorer`: the interactive explorer (navigation view, detector view with the
  mask editor, controls), streaming results from a :class:`stem_explorer.Session`.
- :class:`CompareExplorer`: many data sets side by side from one shared mask
  (``Explorer([...])`` or ``Explorer("folder/")`` returns one).
- :class:`PathChooser`: pick data files on the kernel's machine by path.
- :class:`MaskEditor`: draw detector masks; synced as :mod:`stem_explorer.masks` dicts.
- :class:`ImageView`: a live, zoomable bqplot image (throttled, multiscale).
- :func:`itk_view`: hand a result to itkwidgets when it is installed.
"""

from ._bundle import BundleError
from .compare import CompareExplorer
from .explorer import Explorer
from .itk import itk_view
from .mask_editor import MaskEditor
from .path_chooser import PathChooser
from .views import ImageView

__all__ = ["BundleError", "CompareExplorer", "Explorer", "ImageView", "MaskEditor", "PathChooser", "itk_view"]

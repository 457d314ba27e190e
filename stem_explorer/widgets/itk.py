"""Hand results to itkwidgets, when it is installed (an optional viewer)."""

from __future__ import annotations

import numpy as np

from ..errors import StemExplorerError


def itk_view(result, **options):
    """Show ``result`` (a ResultArray, xarray or numpy array) with ``itkwidgets.view``.

    itkwidgets is optional: without it this raises an error naming the install
    command. Its viewer loads from a CDN at run time, so it needs internet access in
    the browser; the explorer's own views work offline.
    """
    try:
        import itkwidgets
    except ImportError:
        raise StemExplorerError(
            "itk_view needs itkwidgets: pip install 'itkwidgets[notebook]' (its viewer loads "
            "from a CDN, so the browser needs internet access); the explorer's own views work "
            "without it"
        ) from None
    data = getattr(result, "data", result)
    return itkwidgets.view(np.ascontiguousarray(np.asarray(data, dtype=np.float32)), **options)

"""Conversion of metadata and parameters to plain JSON types."""

import numpy as np


def jsonable(value):
    """``value`` with numpy scalars/arrays and tuples turned into JSON types; objects
    JSON cannot hold become their ``str``."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)

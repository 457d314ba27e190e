"""Checks of numeric options (counts, sizes, times) where users pass them in.

A bad count or size must fail where it is given, naming the option, its range and
the fix, rather than later as a hang (a cluster of no workers) or a giant allocation.
"""

from __future__ import annotations

import math
import numbers

from .errors import OptionError


def whole_number(name: str, value, minimum: int, maximum: int, meaning: str, fix: str = "") -> int:
    """``value`` as an int when it is a whole number from ``minimum`` to ``maximum``.

    Floats with a whole value (``128e6``) are accepted; booleans, NaN, infinities and
    fractions are not. Otherwise an :class:`~stem_explorer.errors.OptionError` says
    ``name`` (what the caller typed), ``meaning``, the range and ``fix``.
    """
    if _is_real(value) and math.isfinite(value) and value == int(value) and minimum <= value <= maximum:
        return int(value)
    raise OptionError(
        f"{name} must be a whole number from {minimum:,} to {maximum:,} ({meaning}), got {value!r}"
        + (f"; {fix}" if fix else "")
    )


def seconds(name: str, value, maximum: float, meaning: str) -> float:
    """``value`` as a float when it is more than 0 and at most ``maximum`` seconds."""
    if _is_real(value) and 0 < value <= maximum:  # NaN fails both comparisons
        return float(value)
    raise OptionError(f"{name} must be a number of seconds above 0 and at most {maximum:g} ({meaning}), got {value!r}")


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)

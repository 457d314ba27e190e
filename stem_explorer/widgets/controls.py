"""The Explorer's parameter controls, generated from the analyses' declarations.

Numbers, integers, booleans and choices get a control each (a slider where both ends
of the range are declared); masks and points come from the detector view
(:func:`.choices.build_analysis`); what has neither (lists, labels, parameters whose
default is None and that declare no example) keeps its default. The values a control
lets through are checked by the declaration when the analysis is built, so the
Explorer refuses what the API and the command line refuse, with the same message.
"""

from __future__ import annotations

from typing import Optional

import ipywidgets as widgets

from ..analyses.params import REQUIRED, Param

#: Steps of a slider over a declared range.
SLIDER_STEPS = 720
#: Controls' width.
WIDTH = "260px"


def start_value(param: Param):
    """What the control shows first: the default, else the first declared example."""
    if param.default is not REQUIRED and param.default is not None:
        return param.default
    return param.examples[0] if param.examples else None


def control_for(param: Param) -> Optional[widgets.Widget]:
    """An ipywidget editing ``param``, or None when the Explorer does not show one."""
    value = start_value(param)
    options = {
        "description": param.name.replace("_", " ") + (f" ({param.unit})" if param.unit else ""),
        "tooltip": param.help,
        "style": {"description_width": "initial"},
        "layout": {"width": WIDTH},
    }
    if param.kind == "boolean":
        return widgets.Checkbox(value=bool(value), indent=False, **options)
    if param.kind == "choice":
        return widgets.Dropdown(options=list(param.options), value=value if value is not None else param.options[0], **options)
    if value is None:
        return None
    if param.kind == "integer":
        low = param.minimum if param.minimum is not None else -(2**31)
        high = param.maximum if param.maximum is not None else 2**31 - 1
        return widgets.BoundedIntText(value=int(value), min=int(low), max=int(high), **options)
    if param.kind == "number":
        if param.minimum is not None and param.maximum is not None:
            step = (param.maximum - param.minimum) / SLIDER_STEPS
            return widgets.FloatSlider(value=float(value), min=param.minimum, max=param.maximum, step=step, **options)
        return widgets.FloatText(value=float(value), **options)
    return None


def controls_for(cls) -> dict:
    """``{parameter name: control}`` for the parameters of ``cls`` the Explorer shows."""
    found = {}
    for param in cls.parameters():
        control = control_for(param)
        if control is not None:
            found[param.name] = control
    return found

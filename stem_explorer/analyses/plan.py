"""Turn the analyses of one run into one engine plan (one pass over the data).

Mask columns of every analysis are stacked into a single :class:`MaskProduct`; other
engine ops are shared between analyses that ask for the same one (``SumFrame`` and
``MeanFrame`` read the data once). The returned ``finalize`` maps the engine's
accumulators back to each analysis's inputs and collects their results.
"""

from __future__ import annotations

import datetime
import socket
from typing import Optional, Sequence

import numpy as np
import scipy.sparse

from .._version import __version__
from ..engine import MaskProduct, Plan
from ..engine.roi import runs_description
from ..engine.descan import ShiftedMaskProduct, dense_copies, integer_shifts
from ..engine.tasks import DEFAULT_TILE_BYTES
from ..errors import AnalysisError, OptionError
from ..io.base import DataSet
from ..results import Results, check_name
from .base import Analysis, MaskColumns
from .descan import Descan


def unique_labels(analyses: Sequence[Analysis]) -> list[str]:
    """Each analysis's label, suffixed ``_2``, ``_3``... where labels repeat."""
    seen: dict[str, int] = {}
    labels = []
    for analysis in analyses:
        base = getattr(analysis, "name", None) or analysis.label
        seen[base] = seen.get(base, 0) + 1
        labels.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return labels


def descan_shifts(descan: Optional[Descan], dataset: DataSet) -> Optional[np.ndarray]:
    """The ``(n_frames, 2)`` shifts of ``descan`` on ``dataset``'s scan (None without
    one); OptionError for anything but a :class:`~.descan.Descan` that fits the scan."""
    if descan is None:
        return None
    if not isinstance(descan, Descan):
        raise OptionError(f"descan must be a Descan (Descan.plane(), Descan.from_map(), Descan.estimate()), "
                          f"got {type(descan).__name__}")
    return descan.shifts_for(dataset.nav_shape)


def build_plan(
    analyses: Sequence[Analysis],
    dataset: DataSet,
    *,
    kernel: str = "auto",
    tile_bytes: Optional[int] = None,
    roi: Optional[np.ndarray] = None,
    descan: Optional[Descan] = None,
):
    """``(plan, finalize)`` for running ``analyses`` on ``dataset`` in one pass;
    ``roi`` (sorted flat frame indices of a scan ROI) goes into the provenance.

    With ``descan`` (a :class:`~.descan.Descan`) every mask column moves with the
    pattern (:class:`~stem_explorer.engine.descan.ShiftedMaskProduct`) and each
    analysis plans and computes through its ``*_with_descan`` methods.
    """
    if not analyses:
        raise AnalysisError("run() needs at least one analysis, e.g. SumFrame()")
    if kernel not in MaskProduct.KERNELS:
        raise AnalysisError(f"kernel must be one of {', '.join(map(repr, MaskProduct.KERNELS))}; got {kernel!r}")
    for analysis in analyses:
        if not isinstance(analysis, Analysis):
            raise AnalysisError(f"{analysis!r} is not an analysis; use the classes in stem_explorer.analyses")
        if getattr(analysis, "name", None) is not None:
            check_name(analysis.name, f"the name of {type(analysis).__name__}")
        analysis.validate(dataset)
    labels = unique_labels(analyses)
    shifts = descan_shifts(descan, dataset)

    ops, op_index = [], {}
    mask_blocks, routes = [], []  # routes[i][j]: ("mask", col_lo, col_hi) or ("op", k)
    n_columns = 0
    for analysis in analyses:
        route = []
        requests = analysis.requests(dataset) if shifts is None else analysis.requests_with_descan(dataset, shifts)
        for request in requests:
            if isinstance(request, MaskColumns):
                mask_blocks.append(request.matrix)
                route.append(("mask", n_columns, n_columns + request.width))
                n_columns += request.width
            else:
                if request.key not in op_index:
                    op_index[request.key] = len(ops)
                    ops.append(request)
                route.append(("op", op_index[request.key]))
        routes.append(route)

    mask_op = None
    if mask_blocks:
        mask_op = len(ops)
        matrix = scipy.sparse.hstack(mask_blocks, format="csr")
        moves = None if shifts is None else integer_shifts(shifts, dataset.sig_shape)
        product = MaskProduct(matrix, kernel=kernel, dtype=dataset.dtype, sig_shape=dataset.sig_shape,
                              dense_copies=moves is not None and dense_copies(moves))
        ops.append(product if moves is None else ShiftedMaskProduct(product, moves))
    plan = Plan(tuple(ops), tile_bytes or DEFAULT_TILE_BYTES)
    provenance = {
        "software": {"name": "stem_explorer", "version": __version__},
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "dataset": dataset.describe(),
        "analyses": [dict(a.to_dict(), label=label) for a, label in zip(analyses, labels)],
        "kernel": ops[mask_op].kernel if mask_op is not None else None,
    }
    if roi is not None:
        provenance["roi"] = {"frame_runs": runs_description(roi), "n_frames": int(len(roi))}
    if descan is not None:
        provenance["descan"] = descan.to_dict()

    def finalize(accumulators: list, filled: np.ndarray) -> Results:
        arrays = {}
        for analysis, label, route in zip(analyses, labels, routes):
            inputs = []
            for entry in route:
                # copies: the engine keeps merging into its accumulators in place
                if entry[0] == "mask":
                    inputs.append(accumulators[mask_op][:, entry[1] : entry[2]].copy())
                elif ops[entry[1]].per_frame:
                    inputs.append(accumulators[entry[1]].copy())
                else:
                    inputs.append(accumulators[entry[1]])
            if shifts is None:
                computed = analysis.compute(inputs, dataset)
            else:
                computed = analysis.compute_with_descan(inputs, dataset, shifts)
            for name, array in computed.items():
                arrays[f"{label}/{name}"] = array
        # a copy: the engine keeps filling its array in place
        covered = filled.reshape(dataset.nav_shape).copy()
        return Results(arrays, dict(provenance, complete=bool(filled.all())), filled=covered)

    return plan, finalize

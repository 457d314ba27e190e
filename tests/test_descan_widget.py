"""The Explorer's descan control on the synthetic sample, whose beam shift is known:
estimate (a plane through the bright-field disk's centre of mass), apply, undo."""

import numpy as np
import pytest

from stem_explorer.sample import make_sample, sample_truth
from stem_explorer.widgets import Explorer

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAV, SIG = (12, 20), (40, 36)


def known_plane():
    """The least-squares plane through the sample's true shifts, zero at the mean."""
    truth = sample_truth(NAV, SIG)
    iy, ix = np.indices(NAV)
    design = np.stack([np.ones(iy.size), iy.ravel(), ix.ravel()], axis=1)
    fitted = []
    for field in (truth.shift_y, truth.shift_x):
        coefficients = np.linalg.lstsq(design, field.ravel(), rcond=None)[0]
        plane = design @ coefficients
        fitted.append(plane - plane.mean())
    return np.stack(fitted, axis=1)


def test_estimate_apply_and_undo(tmp_path):
    path = make_sample(tmp_path / "s.h5", nav_shape=NAV, sig_shape=SIG)
    explorer = Explorer(str(path), n_workers=1, export_dir=str(tmp_path / "exports"))
    try:
        explorer.wait(300)  # the cluster's start: minutes on a loaded machine
        control = explorer.descan_control
        assert explorer.session.descan is None and control.apply_toggle.disabled
        control.estimate()
        estimated = control.wait(120)
        np.testing.assert_allclose(estimated.shifts_for(NAV), known_plane(), atol=0.15)
        assert explorer.session.descan is estimated and control.apply_toggle.value
        assert "descan up to" in control.label.value
        results = explorer.wait(120)  # applying recomputed the navigation image
        assert results.provenance["descan"] == estimated.to_dict()
        control.apply_toggle.value = False  # undo
        assert explorer.session.descan is None
        assert "descan" not in explorer.wait(120).provenance
    finally:
        explorer.close()

"""Centre-of-mass conventions of the peers (LiberTEM, py4DSTEM, pyxem): converters
checked against synthetic frames whose centre of mass is known, each peer's formula
written out here from its source, and, where the peer is installed, the peer's own
output (optional: none of them is a dependency)."""

import math

import numpy as np
import pytest

from stem_explorer.analyses import CenterOfMass, build_plan
from stem_explorer.analyses import com_conventions as conv
from stem_explorer.engine import run_local
from stem_explorer.io import open_dataset

NAV, SIG = (3, 4), (10, 13)  # even rows, odd columns: the centre conventions differ


def frames_with_com():
    """Frames with two bright pixels each, and their exact centre of mass (row, col)."""
    rng = np.random.default_rng(7)
    frames = np.zeros((math.prod(NAV),) + SIG, np.float32)
    rows, cols = [], []
    for i in range(len(frames)):
        (y1, y2), (x1, x2) = rng.integers(0, SIG[0], 2), rng.integers(0, SIG[1], 2)
        w1, w2 = rng.uniform(1, 5, 2)
        frames[i, y1, x1] += w1
        frames[i, y2, x2] += w2
        rows.append((w1 * y1 + w2 * y2) / (w1 + w2))
        cols.append((w1 * x1 + w2 * x2) / (w1 + w2))
    return frames.reshape(NAV + SIG), np.reshape(rows, NAV), np.reshape(cols, NAV)


def our_com(frames, **params):
    ds = open_dataset(frames)
    plan, finalize = build_plan([CenterOfMass(**params)], ds)
    parts = ds.partitions(1)
    results = finalize(run_local(parts, plan, [ds.local_payload(p.start, p.stop) for p in parts]),
                       np.ones(ds.n_frames, bool))
    return results["com/shift_y"].data, results["com/shift_x"].data


PARAMS = [
    {},
    {"scan_rotation": 37.0},
    {"scan_rotation": -150.0, "flip_y": True},
    {"center": (4.0, 7.5), "scan_rotation": 90.0, "flip_y": True},
]


def libertem_field(rows, cols, cy, cx, scan_rotation, flip_y):
    """LiberTEM's ``apply_correction``: ``rotate_deg(a) @ flip_y()`` on (y, x),
    ``rotate(r) = [[cos r, sin r], [-sin r, cos r]]``, around (cy, cx)."""
    r = math.radians(scan_rotation)
    matrix = np.array([[math.cos(r), math.sin(r)], [-math.sin(r), math.cos(r)]])
    if flip_y:
        matrix = matrix @ np.array([[-1, 0], [0, 1]])
    return matrix @ np.stack([(rows - cy).ravel(), (cols - cx).ravel()])


@pytest.mark.parametrize("params", PARAMS)
def test_our_shifts_are_the_oriented_offset_from_the_centre(params):
    frames, rows, cols = frames_with_com()
    sy, sx = our_com(frames, **params)
    cy, cx = params.get("center", ((SIG[0] - 1) / 2, (SIG[1] - 1) / 2))
    expect = libertem_field(rows, cols, cy, cx, params.get("scan_rotation", 0.0), params.get("flip_y", False))
    np.testing.assert_allclose(np.stack([sy.ravel(), sx.ravel()]), expect, atol=1e-5)
    row, col = conv.absolute_com(sy, sx, sig_shape=SIG, **params)
    np.testing.assert_allclose(row, rows, atol=1e-5)
    np.testing.assert_allclose(col, cols, atol=1e-5)


@pytest.mark.parametrize("params", PARAMS)
def test_libertem_convention(params):
    """Same orientation; the default centre is (H // 2, W // 2), not (H - 1) / 2."""
    frames, rows, cols = frames_with_com()
    sy, sx = our_com(frames, **params)
    a, flip = params.get("scan_rotation", 0.0), params.get("flip_y", False)
    field_y, field_x = conv.to_libertem(sy, sx, sig_shape=SIG, **params)
    expect = libertem_field(rows, cols, SIG[0] // 2, SIG[1] // 2, a, flip)
    np.testing.assert_allclose(np.stack([field_y.ravel(), field_x.ravel()]), expect, atol=1e-5)
    back = conv.from_libertem(field_y, field_x, sig_shape=SIG, **params)
    np.testing.assert_allclose(back, (sy, sx), atol=1e-5)
    # with LiberTEM's centre set to ours, the numbers are the same
    same = conv.to_libertem(sy, sx, sig_shape=SIG, libertem_center=conv.absolute_com(0.0, 0.0, sig_shape=SIG, **params),
                            **params)
    np.testing.assert_allclose(same, (sy, sx), atol=1e-9)


@pytest.mark.parametrize("params", PARAMS)
def test_py4dstem_convention(params):
    """py4DSTEM's measured CoM is absolute and its x is the detector row."""
    frames, rows, cols = frames_with_com()
    sy, sx = our_com(frames, **params)
    com_x, com_y = conv.to_py4dstem(sy, sx, sig_shape=SIG, **params)
    np.testing.assert_allclose(com_x, rows, atol=1e-5)
    np.testing.assert_allclose(com_y, cols, atol=1e-5)
    np.testing.assert_allclose(conv.from_py4dstem(com_x, com_y, sig_shape=SIG, **params), (sy, sx), atol=1e-5)


@pytest.mark.parametrize("params", PARAMS)
def test_pyxem_convention(params):
    """pyxem's BeamShift is (W / 2 - col, H / 2 - row), x first."""
    frames, rows, cols = frames_with_com()
    sy, sx = our_com(frames, **params)
    x_shift, y_shift = conv.to_pyxem(sy, sx, sig_shape=SIG, **params)
    np.testing.assert_allclose(x_shift, SIG[1] / 2 - cols, atol=1e-5)
    np.testing.assert_allclose(y_shift, SIG[0] / 2 - rows, atol=1e-5)
    np.testing.assert_allclose(conv.from_pyxem(x_shift, y_shift, sig_shape=SIG, **params), (sy, sx), atol=1e-5)


def py4dstem_rotate(com_x, com_y, t_deg, transpose):
    """py4DSTEM's ``_solve_for_center_of_mass_relative_rotation`` with a forced
    rotation: x is the row; transposing swaps x and y before the rotation."""
    t = math.radians(t_deg)
    if transpose:
        com_x, com_y = com_y, com_x
    return math.cos(t) * com_x - math.sin(t) * com_y, math.sin(t) * com_x + math.cos(t) * com_y


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("t", np.arange(-180.0, 180.0, 15.0))
def test_py4dstem_rotation_over_the_whole_circle(t, transpose):
    dy, dx = np.random.default_rng(1).normal(size=(2, 50))
    scan_rotation, flip_y = conv.from_py4dstem_rotation(t, transpose)
    np.testing.assert_allclose(conv.orient(dy, dx, scan_rotation, flip_y), py4dstem_rotate(dy, dx, t, transpose),
                               atol=1e-12)
    back = conv.to_py4dstem_rotation(scan_rotation, flip_y)
    assert back[1] == transpose and math.isclose(math.remainder(back[0] - t, 360.0), 0.0, abs_tol=1e-9)
    if not transpose:
        assert scan_rotation == pytest.approx(conv._wrap(-t))  # force_com_rotation=t is scan_rotation=-t


def test_unorient_inverts_orient():
    dy, dx = np.random.default_rng(2).normal(size=(2, 20))
    for angle in (0.0, 33.0, -170.0):
        for flip in (False, True):
            np.testing.assert_allclose(conv.unorient(*conv.orient(dy, dx, angle, flip), angle, flip), (dy, dx),
                                       atol=1e-12)


# -- the peers' own output, where they are installed --------------------------------------------
@pytest.mark.parametrize("params", PARAMS[:3])
def test_libertem_comudf_agrees(params):
    api = pytest.importorskip("libertem.api")
    from libertem.udf.com import CoMUDF

    frames, _rows, _cols = frames_with_com()
    sy, sx = our_com(frames, **params)
    with api.Context.make_with("inline") as ctx:
        ds = ctx.load("memory", data=frames, sig_dims=2)
        udf = CoMUDF.with_params(scan_rotation=params.get("scan_rotation", 0.0), flip_y=params.get("flip_y", False))
        result = ctx.run_udf(dataset=ds, udf=udf)
    expect = conv.to_libertem(sy, sx, sig_shape=SIG, **params)
    np.testing.assert_allclose(result["field_y"].data, expect[0], atol=1e-4)
    np.testing.assert_allclose(result["field_x"].data, expect[1], atol=1e-4)


def test_pyxem_beam_shift_agrees():
    pxm = pytest.importorskip("pyxem")
    frames, _rows, _cols = frames_with_com()
    sy, sx = our_com(frames)
    shifts = pxm.signals.Diffraction2D(frames).get_direct_beam_position(method="center_of_mass")
    expect = conv.to_pyxem(sy, sx, sig_shape=SIG)
    np.testing.assert_allclose(shifts.data[..., 0], expect[0], atol=1e-4)
    np.testing.assert_allclose(shifts.data[..., 1], expect[1], atol=1e-4)


def test_py4dstem_center_of_mass_agrees():
    py4dstem = pytest.importorskip("py4DSTEM")
    frames, _rows, _cols = frames_with_com()
    sy, sx = our_com(frames)
    com_x, com_y = py4dstem.process.utils.get_CoM(frames[1, 2])
    expect = conv.to_py4dstem(sy, sx, sig_shape=SIG)
    assert (com_x, com_y) == pytest.approx((expect[0][1, 2], expect[1][1, 2]), abs=1e-4)


@pytest.mark.parametrize("t, transpose", [(30.0, False), (77.0, False), (-120.0, True), (0.0, True)])
def test_py4dstem_dpc_rotation_agrees(t, transpose):
    """py4DSTEM's DPC with a forced rotation and transpose orients as
    ``from_py4dstem_rotation`` says (its "constant" fit subtracts the mean CoM)."""
    py4dstem = pytest.importorskip("py4DSTEM")
    pytest.importorskip("matplotlib").use("Agg")
    from py4DSTEM.process.phase import DPC

    frames, rows, cols = frames_with_com()
    dpc = DPC(datacube=py4dstem.DataCube(frames.astype(np.float64)), energy=300e3, verbose=False)
    dpc.preprocess(force_com_rotation=t, force_com_transpose=transpose, fit_function="constant",
                   plot_center_of_mass=None, plot_rotation=False)
    scan_rotation, flip_y = conv.from_py4dstem_rotation(t, transpose)
    sy, sx = our_com(frames, center=(rows.mean(), cols.mean()), scan_rotation=scan_rotation, flip_y=flip_y)
    # the oriented CoM has no public name in py4DSTEM 0.14 (reciprocal sampling 1 here)
    np.testing.assert_allclose(np.asarray(dpc._com_x), sy, atol=1e-4)
    np.testing.assert_allclose(np.asarray(dpc._com_y), sx, atol=1e-4)

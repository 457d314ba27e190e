"""Descan correction: masks moved per scan position, against plain numpy (each
frame's mask moved by the rounded shift, then multiplied), through every kernel path,
dtype and odd shape; a synthetic scan with a known descan plane; the Descan object's
checks, description and estimate; previews and the session."""

import json
import re

import numpy as np
import pytest

import _reference as ref
from stem_explorer import masks
from stem_explorer.analyses import CenterOfMass, Descan, VirtualDetector, build_plan
from stem_explorer.engine import MaskProduct, run_local
from stem_explorer.engine.descan import ShiftedMaskProduct, integer_shifts
from stem_explorer.engine.tasks import compute_preview
from stem_explorer.errors import OptionError
from stem_explorer.io import open_dataset
from stem_explorer.results import Results
from test_analyses import local_results, make_data

SIG = (13, 10)
MASKS = {
    "disk": masks.Disk(6, 4.5, 3.2),
    "ring": masks.Ring(6.5, 5, 1.5, 4),
    "polygon": masks.Polygon([(1, 1), (11, 3), (7, 9)]),
    "full_rows": masks.Rectangle(4, 0, 3, 10),  # runs over whole detector rows
}


def random_shifts(nav, seed=1, spread=4.0):
    """Shifts up to a few pixels, some moving masks partly or wholly off the detector,
    some exactly half a pixel (rounded up)."""
    rng = np.random.default_rng(seed)
    shifts = rng.normal(0, spread, nav + (2,))
    shifts.reshape(-1, 2)[::5] = (0.5, -1.5)
    shifts.reshape(-1, 2)[1:2] = (-40.0, 3.0)  # off the detector: nothing counts
    shifts.reshape(-1, 2)[2:3] = (30.0, -25.0)  # off the other corner
    return shifts


@pytest.mark.parametrize("kernel", ["spans", "columns", "sparse", "dense"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", ">u2", "float32", "int64"])
def test_every_path_matches_numpy_moved_masks(tmp_path, dtype, kernel):
    nav = (5, 7)
    data = make_data(nav, SIG, dtype)
    shifts = random_shifts(nav)
    weighted = masks.Weighted(np.random.default_rng(2).random(SIG).astype(np.float32) * (masks.Disk(6, 5, 4).rasterize(SIG) > 0))
    named = dict(MASKS, weighted=weighted)
    results, plan = local_results(tmp_path, data, [VirtualDetector(named)], kernel=kernel, descan=Descan.from_map(shifts))
    assert isinstance(plan.ops[-1], ShiftedMaskProduct)
    rtol = 1e-5 if dtype == "float32" or kernel == "dense" else 1e-12
    for name, mask in named.items():
        expected = ref.descanned_virtual_image(data, mask.rasterize(SIG), shifts)
        np.testing.assert_allclose(results[f"vd/{name}"].data, expected, rtol=rtol, atol=rtol * 1e3, err_msg=name)


@pytest.mark.parametrize("nav, sig", [((11,), (8, 9)), ((1,), (7, 6)), ((1, 1), (6, 7)), ((3, 8), (9, 5))],
                         ids=["line", "single", "single2d", "nonsquare"])
def test_odd_scans_match_numpy(tmp_path, nav, sig):
    data = make_data(nav, sig, "uint16")
    shifts = random_shifts(nav, spread=2.0)
    mask = masks.Ring(sig[0] / 2, sig[1] / 2, 1, 3)
    results, _ = local_results(tmp_path, data, [VirtualDetector(mask)], descan=Descan.from_map(shifts))
    np.testing.assert_allclose(results["vd/mask0"].data, ref.descanned_virtual_image(data, mask.rasterize(sig), shifts))


# -- a synthetic scan whose pattern moves along a known plane ------------------------------
PLANE = dict(offset=(-2.0, 1.5), per_row=(0.8, -0.3), per_column=(-0.4, 0.5))
NAV, DET = (6, 9), (31, 27)  # the detector's centre is (15, 13)


def moving_spot_scan():
    """Float32 frames of a Gaussian spot (sigma 1 pixel, total 1000 each) at (15, 13)
    plus the plane's shift at every position: its sampled centre of mass is the
    shifted centre."""
    shifts = Descan.plane(**PLANE).shifts_for(NAV).reshape(NAV + (2,))
    y, x = np.indices(DET)
    data = np.zeros(NAV + DET, np.float32)
    for index in np.ndindex(NAV):
        spot = np.exp(-((y - 15 - shifts[index][0]) ** 2 + (x - 13 - shifts[index][1]) ** 2) / 2)
        data[index] = spot * (1000.0 / spot.sum())
    return data


def test_corrected_bright_field_is_flat_on_a_known_plane(tmp_path):
    data = moving_spot_scan()
    bf = VirtualDetector({"bf": masks.Disk(15, 13, 6)})  # holds the spot's tail moved within half a pixel
    plain, _ = local_results(tmp_path, data, [bf])
    corrected, _ = local_results(tmp_path, data, [bf], descan=Descan.plane(**PLANE))
    assert np.ptp(plain["vd/bf"].data) > 300  # the spot leaves the uncorrected mask
    np.testing.assert_allclose(corrected["vd/bf"].data, 1000.0, rtol=1e-5)
    assert corrected.provenance["descan"] == Descan.plane(**PLANE).to_dict()


@pytest.mark.parametrize("radius", [None, 6.0])
def test_estimate_recovers_the_plane_and_corrects_the_centre_of_mass(tmp_path, radius):
    data = moving_spot_scan()
    path = tmp_path / "scan.raw"
    data.tofile(path)
    ds = open_dataset(path, nav_shape=NAV, sig_shape=DET, dtype="float32")
    # a support that holds the spot wherever it moves (the estimate's support stays put)
    estimated = Descan.estimate(ds, fit="plane", reference="center", radius=radius and 12.0)
    truth = Descan.plane(**PLANE)
    np.testing.assert_allclose(estimated.shifts_for(NAV), truth.shifts_for(NAV), atol=0.01)
    plain, _ = local_results(tmp_path, data, [CenterOfMass(radius=radius)])
    corrected, _ = local_results(tmp_path, data, [CenterOfMass(radius=radius)], descan=estimated)
    assert np.abs(plain["com/shift_y"].data).max() > 3
    for axis in ("y", "x"):
        assert np.abs(corrected[f"com/shift_{axis}"].data).max() < 0.01


def test_centre_of_mass_subtracts_the_shift_numerically(tmp_path):
    data = make_data((4, 5), SIG, "uint16")
    shifts = random_shifts((4, 5), spread=1.5)
    shifts.reshape(-1, 2)[1] = (0.3, -0.2)
    results, _ = local_results(tmp_path, data, [CenterOfMass(radius=3.0)], descan=Descan.from_map(shifts))
    center = ((SIG[0] - 1) / 2, (SIG[1] - 1) / 2)
    moves = ref.rounded_shifts(shifts).reshape(-1, 2)
    f = ref.frames(data)
    y, x = np.indices(SIG)
    for i, (dy, dx) in enumerate(moves):  # the support disk moved, moments about the moved centre
        if i == 2:
            continue  # moved off the detector: no intensity, NaN (checked below)
        support = ref.moved_mask(ref.disk(SIG, *center, 3.0), dy, dx)
        total = (f[i] * support).sum()
        com_y = (f[i] * support * y).sum() / total - center[0] - shifts.reshape(-1, 2)[i, 0]
        com_x = (f[i] * support * x).sum() / total - center[1] - shifts.reshape(-1, 2)[i, 1]
        np.testing.assert_allclose(results["com/shift_y"].data.ravel()[i], com_y, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(results["com/shift_x"].data.ravel()[i], com_x, rtol=1e-9, atol=1e-12)
    assert np.isnan(results["com/shift_y"].data.ravel()[2]) and results["com/total"].data.ravel()[2] == 0


def test_estimate_from_results_undoes_rotation_and_takes_a_reference(tmp_path):
    data = moving_spot_scan()
    rotated, _ = local_results(tmp_path, data, [CenterOfMass(scan_rotation=30.0, flip_y=True)])
    estimated = Descan.estimate(rotated, fit="map", reference=(2, 3))
    truth = Descan.plane(**PLANE).shifts_for(NAV)
    np.testing.assert_allclose(estimated.shifts_for(NAV), truth - truth[2 * NAV[1] + 3], atol=0.01)
    assert estimated.shifts_for(NAV)[2 * NAV[1] + 3] == pytest.approx([0, 0])
    mean = Descan.estimate(rotated)  # a plane through zero mean
    np.testing.assert_allclose(mean.shifts_for(NAV).mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(mean.shifts_for(NAV), truth - truth.mean(axis=0), atol=0.01)


# -- the engine op on its own -------------------------------------------------------------
def test_preview_frames_take_their_own_shifts():
    """A preview gathers scattered frames into one tile: each must use the shift of
    its scan position, not of its place in the tile."""
    data = make_data((4, 6), SIG, "uint16")
    shifts = random_shifts((4, 6), spread=2.0)
    mask = MASKS["disk"]
    path_data = data.reshape(-1, *SIG)

    class Source:  # just enough of a partition for compute_preview: an in-memory reader
        sig_shape, dtype, n_frames = SIG, data.dtype, 24

        def open(self, payload):
            import contextlib

            class Reader:
                def take(self, wanted, out):
                    out[...] = path_data[wanted].reshape(len(wanted), -1)
            return contextlib.nullcontext(Reader())

    class Piece:
        source = Source()

    wanted = np.array([3, 9, 17, 22])
    matrix = mask.rasterize(SIG).reshape(-1, 1)
    op = ShiftedMaskProduct(MaskProduct(matrix, dtype=data.dtype, sig_shape=SIG), integer_shifts(shifts.reshape(-1, 2), SIG))
    from stem_explorer.engine import Plan

    result = compute_preview([(Piece(), None, wanted)], Plan((op,)))
    expected = ref.descanned_virtual_image(data, mask.rasterize(SIG), shifts).ravel()[wanted]
    np.testing.assert_allclose(result.partials[0][:, 0], expected)


@pytest.mark.parametrize("dtype", ["float32", ">f4", "uint16"])
def test_dense_path_in_runs_of_equal_shifts_matches_numpy(dtype):
    """A plane's shifts come in runs along the scan: float32 frames then keep one
    sgemm per run with the masks moved once (the other dtypes a shifted copy)."""
    nav = (3, 40)
    data = make_data(nav, SIG, dtype)
    shifts = Descan.plane(offset=(-3, 2), per_row=(2.5, 0), per_column=(0.05, -0.04)).shifts_for(nav)
    moves = integer_shifts(shifts, SIG)
    assert (moves[1:] != moves[:-1]).any(axis=1).sum() < 120 / 8  # runs of 8 frames or more on average
    stack = np.stack([MASKS["ring"].rasterize(SIG).ravel(), MASKS["polygon"].rasterize(SIG).ravel()], axis=1)
    op = ShiftedMaskProduct(MaskProduct(stack, kernel="dense", sig_shape=SIG), moves)
    frames = data.reshape(120, -1)
    out = np.zeros((120, 2))
    op.feed((0, out), 0, frames if op.reads_stored_order(frames.dtype) else frames.astype(frames.dtype.newbyteorder("=")))
    for j, name in enumerate(["ring", "polygon"]):
        expected = ref.descanned_virtual_image(data, MASKS[name].rasterize(SIG), shifts.reshape(nav + (2,)))
        np.testing.assert_allclose(out[:, j], expected.ravel(), rtol=1e-5)


def test_integer_shifts_round_half_up_and_clip():
    shifts = integer_shifts(np.array([[0.5, -0.5], [1.49, -1.51], [1e9, -1e9]]), (20, 30))
    assert shifts.dtype == np.int16
    assert shifts.tolist() == [[1, 0], [1, -2], [30, -30]]


def test_the_op_travels_and_keeps_its_key():
    import pickle

    matrix = MASKS["ring"].rasterize(SIG).reshape(-1, 1)
    shifts = integer_shifts(random_shifts((3, 3)).reshape(-1, 2), SIG)
    op = ShiftedMaskProduct(MaskProduct(matrix, sig_shape=SIG), shifts)
    other = ShiftedMaskProduct(MaskProduct(matrix, sig_shape=SIG), integer_shifts(np.zeros((9, 2)), SIG))
    assert op.key != other.key
    copy = pickle.loads(pickle.dumps(op))
    frames = make_data((9,), SIG, "uint16").reshape(9, -1)
    a, b = np.zeros((9, 1)), np.zeros((9, 1))
    op.feed((0, a), 0, frames)
    copy.feed((0, b), 0, frames)
    np.testing.assert_array_equal(a, b)


# -- the Descan object ---------------------------------------------------------------------
def test_description_round_trips_through_json_and_hdf5(tmp_path):
    plane = Descan.plane(**PLANE)
    shifts = random_shifts((3, 4))
    for descan in (plane, Descan.from_map(shifts)):
        again = Descan.from_dict(json.loads(json.dumps(descan.to_dict())))
        assert again == descan
        np.testing.assert_array_equal(again.shifts_for((3, 4)), descan.shifts_for((3, 4)))
    data = make_data((3, 4), SIG, "uint16")
    results, _ = local_results(tmp_path, data, [VirtualDetector(MASKS["disk"])], descan=Descan.from_map(shifts))
    results.save(tmp_path / "r.h5")
    loaded = Results.load(tmp_path / "r.h5")
    assert Descan.from_dict(loaded.provenance["descan"]) == Descan.from_map(shifts)


def test_bad_descans_are_refused_clearly(tmp_path):
    data = make_data((3, 4), SIG, "uint16")
    path = tmp_path / "d.raw"
    data.tofile(path)
    ds = open_dataset(path, nav_shape=(3, 4), sig_shape=SIG, dtype="uint16")
    vd = [VirtualDetector(MASKS["disk"])]
    with pytest.raises(OptionError, match=r"map is for a scan of shape \(4, 3\).*\(3, 4\)"):
        build_plan(vd, ds, descan=Descan.from_map(np.zeros((4, 3, 2))))
    nan = np.zeros((3, 4, 2))
    nan[1, 2, 0] = np.nan
    with pytest.raises(OptionError, match=r"1 positions without a finite shift.*\(1, 2\)"):
        Descan.from_map(nan)
    with pytest.raises(OptionError, match=r"shape \(ny, nx, 2\)"):
        Descan.from_map(np.zeros((3, 4)))
    with pytest.raises(OptionError, match="must be finite"):
        Descan.plane(offset=(np.inf, 0))
    with pytest.raises(OptionError, match="descan must be a Descan"):
        build_plan(vd, ds, descan=np.zeros((3, 4, 2)))
    with pytest.raises(OptionError, match="not a descan description"):
        Descan.from_dict({"kind": "map", "shape": [3, 4, 2], "shifts": "AAAA"})
    with pytest.raises(OptionError, match="fit must be one of"):
        Descan.estimate(ds, fit="spline")


def test_estimate_says_when_positions_are_too_few(tmp_path):
    data = np.zeros((1, 2) + SIG, np.uint16)
    data[0, 0, 6, 5] = 10  # one position with intensity, one without
    results, _ = local_results(tmp_path, data, [CenterOfMass()])
    with pytest.raises(OptionError, match="at least 2 scan positions with a centre of mass.*1 have one"):
        Descan.estimate(results)
    with pytest.raises(OptionError, match="1 scan positions have no centre of mass"):
        Descan.estimate(results, fit="map")


def test_cost_model_knows_when_the_dense_path_copies_float32(tmp_path):
    """Float32 data keeps its zero-copy dense path for a plane's runs of equal shifts;
    shifts that change every frame make it copy, and a large annulus goes to the
    binary paths instead."""
    sig = (128, 128)
    path = tmp_path / "f.raw"
    np.zeros((16, 16) + sig, np.float32).tofile(path)
    ds = open_dataset(path, nav_shape=(16, 16), sig_shape=sig, dtype="float32")
    annulus = [VirtualDetector(masks.Ring(64, 64, 20, 63))]
    plane = Descan.plane(per_column=(0.05, 0.05))
    noisy = Descan.from_map(np.random.default_rng(0).normal(0, 2, (16, 16, 2)))
    assert build_plan(annulus, ds)[0].ops[-1].kernel == "dense"
    assert build_plan(annulus, ds, descan=plane)[0].ops[-1].kernel == "dense"
    assert build_plan(annulus, ds, descan=noisy)[0].ops[-1].kernel in ("spans", "columns")


# -- the command line ----------------------------------------------------------------------
@pytest.mark.cluster
@pytest.mark.slow
def test_cli_run_applies_a_descan_map_and_records_it(tmp_path, capsys):
    from stem_explorer.cli import main

    data = make_data((4, 6), SIG, "uint16")
    data.tofile(tmp_path / "d.raw")
    shifts = random_shifts((4, 6), spread=2.0)
    np.save(tmp_path / "descan.npy", shifts)
    out = tmp_path / "o.h5"
    code = main(["run", str(tmp_path / "d.raw"), "--nav-shape", "4", "6", "--sig-shape", *map(str, SIG), "--dtype", "uint16",
                 "-a", "vd", "--disk", "6", "4.5", "3.2", "--descan", str(tmp_path / "descan.npy"), "-o", str(out),
                 "--workers", "1", "-q"])
    assert code == 0, capsys.readouterr().err
    results = Results.load(out)
    np.testing.assert_allclose(results["vd/mask0"].data,
                               ref.descanned_virtual_image(data, MASKS["disk"].rasterize(SIG), shifts))
    assert Descan.from_dict(results.provenance["descan"]) == Descan.from_map(shifts)


def test_cli_refuses_bad_descans_before_starting(tmp_path, capsys):
    from stem_explorer.cli import main

    make_data((4, 6), SIG, "uint16").tofile(tmp_path / "d.raw")
    (tmp_path / "bad.npy").write_text("not numpy")
    run = ["run", str(tmp_path / "d.raw"), "--nav-shape", "4", "6", "--sig-shape", *map(str, SIG), "--dtype", "uint16",
           "-a", "vd", "--disk", "6", "4.5", "3.2", "-q"]
    for extra, message in [(["--descan", str(tmp_path / "bad.npy")], "cannot read .*bad.npy"),
                           (["--descan", str(tmp_path / "missing.npy")], "cannot read .*missing.npy"),
                           (["--descan", str(tmp_path / "d.raw")], "neither .npy"),
                           (["--descan", str(tmp_path / "bad.npy"), "--descan-plane", "0", "0", "0", "0", "0", "0"],
                            "not both")]:
        assert main(run + extra) == 2
        assert re.search(message, capsys.readouterr().err)
    np.save(tmp_path / "small.npy", np.zeros((2, 2, 2)))
    assert main(run + ["--descan", str(tmp_path / "small.npy"), "--workers", "1"]) == 2
    assert "map is for a scan of shape (2, 2)" in capsys.readouterr().err

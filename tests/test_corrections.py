"""guess_corrections: the scan rotation and flip of a centre-of-mass field, checked on
synthetic beam shifts that are the gradient of a known potential (atoms: Gaussian
peaks), turned into detector axes by known rotations over the whole circle, flipped
or not, as arrays and through a real CenterOfMass run."""

import math

import numpy as np
import pytest

from stem_explorer.analyses import CenterOfMass, CorrectionGuess, build_plan, guess_corrections
from stem_explorer.analyses.com_conventions import orient, unorient
from stem_explorer.analyses.corrections import MIN_POSITIONS
from stem_explorer.engine import run_local
from stem_explorer.errors import AnalysisError
from stem_explorer.io import open_dataset

SCAN = (36, 40)
ANGLES = list(range(-345, 360, 15))  # negative, above 180, and the multiples of 90


def atom_field(shape=SCAN, spacing=6.0, sigma=1.4, seed=3, scale=1.0):
    """``grad V`` on the scan grid of ``V``, Gaussian atoms on a jittered lattice (the
    beam is pulled towards the atoms), largest component ``scale``."""
    rng = np.random.default_rng(seed)
    y, x = np.indices(shape, dtype=np.float64)
    gy, gx = np.zeros(shape), np.zeros(shape)
    for ay in np.arange(-spacing, shape[0] + spacing, spacing):
        for ax in np.arange(-spacing, shape[1] + spacing, spacing):
            cy, cx = ay + rng.normal(0, 0.4), ax + 0.5 * ay + rng.normal(0, 0.4)
            weight = rng.uniform(0.6, 1.4) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma**2))
            gy -= (y - cy) / sigma**2 * weight
            gx -= (x - cx) / sigma**2 * weight
    peak = max(np.abs(gy).max(), np.abs(gx).max())
    return gy * scale / peak, gx * scale / peak


def same_angle(a, b, tolerance=1.0):
    return abs(math.remainder(a - b, 360.0)) <= tolerance


@pytest.mark.parametrize("flip", [False, True])
def test_the_guess_finds_every_rotation_and_the_flip(flip):
    truth_y, truth_x = atom_field()
    for angle in ANGLES:
        detector = unorient(truth_y, truth_x, angle, flip)  # what the camera measures
        guess = guess_corrections(detector)
        assert same_angle(guess.scan_rotation, angle) and guess.flip_y == flip, (angle, flip, str(guess))
        assert -180 < guess.scan_rotation <= 180
        assert guess.quality > 0.99 and guess.other_flip_curl_fraction > 20 * guess.curl_fraction, str(guess)
        assert guess.divergence_skewness < -0.5, str(guess)


def test_the_guess_is_absolute_when_the_shifts_were_already_oriented():
    """Shifts computed with some rotation and flip: the guess replaces them."""
    truth_y, truth_x = atom_field()
    detector = unorient(truth_y, truth_x, 125.0, True)
    computed = orient(*detector, -40.0, False)  # what a run with scan_rotation=-40 shows
    guess = guess_corrections(computed, scan_rotation=-40.0, flip_y=False)
    assert same_angle(guess.scan_rotation, 125.0) and guess.flip_y, str(guess)


def test_noise_and_missing_positions_keep_the_guess_within_a_degree():
    truth_y, truth_x = atom_field()
    rng = np.random.default_rng(11)
    detector_y, detector_x = (np.array(a) for a in unorient(truth_y, truth_x, 200.0, False))
    detector_y += rng.normal(0, 0.03, SCAN)
    detector_x += rng.normal(0, 0.03, SCAN)
    detector_y[5:9, 10:14] = np.nan  # no intensity there
    detector_x[30, :] = np.nan
    guess = guess_corrections((detector_y, detector_x))
    assert same_angle(guess.scan_rotation, 200.0) and not guess.flip_y, str(guess)
    assert guess.positions < (SCAN[0] - 2) * (SCAN[1] - 2) - 30


def test_rectangular_scan_steps_are_taken_into_account():
    """A potential sampled with steps (0.5, 1): the gradient per physical length."""
    y, x = np.indices(SCAN, dtype=np.float64)
    hy, hx = 0.5, 1.0
    py, px = y * hy, x * hx
    # the gradient of V = sin(0.9 y) sin(0.45 x), whose divergence is not skewed: the
    # rotation is known up to 180 degrees
    potential_y = 0.9 * np.cos(py * 0.9) * np.sin(px * 0.45)
    potential_x = 0.45 * np.sin(py * 0.9) * np.cos(px * 0.45)
    detector = unorient(potential_y, potential_x, 63.0, True)
    guess = guess_corrections(detector, scan_step=(hy, hx))
    assert guess.flip_y and (same_angle(guess.scan_rotation, 63.0) or same_angle(guess.scan_rotation, 243.0)), str(guess)
    unscaled = guess_corrections(detector)  # steps ignored: the gradient looks curled
    assert unscaled.curl_fraction > 10 * guess.curl_fraction


def test_too_few_positions_is_an_error_not_an_angle():
    truth_y, truth_x = atom_field()
    sparse_y, sparse_x = np.full(SCAN, np.nan), np.full(SCAN, np.nan)
    sparse_y[:5, :5], sparse_x[:5, :5] = truth_y[:5, :5], truth_x[:5, :5]  # 3 x 3 interior positions
    with pytest.raises(AnalysisError, match=rf"only 9 scan positions .* at least {MIN_POSITIONS}"):
        guess_corrections((sparse_y, sparse_x))
    with pytest.raises(AnalysisError, match="at least 3 x 3"):
        guess_corrections((truth_y[:2], truth_x[:2]))
    with pytest.raises(AnalysisError, match="same curl"):
        guess_corrections((np.ones(SCAN), np.zeros(SCAN)))  # a uniform shift: nothing to orient by
    with pytest.raises(AnalysisError, match="2-D shift maps"):
        guess_corrections((truth_y.ravel(), truth_x.ravel()))


# -- through a real CenterOfMass run ------------------------------------------------------
SIG = (15, 15)


def spot_frames(shift_y, shift_x):
    """Frames with one spot at the centre + shift, split over four pixels (bilinear),
    so that each frame's centre of mass is its shift exactly."""
    frames = np.zeros(shift_y.shape + SIG, np.float32)
    cy, cx = (SIG[0] - 1) / 2, (SIG[1] - 1) / 2
    for index in np.ndindex(shift_y.shape):
        y, x = cy + shift_y[index], cx + shift_x[index]
        y0, x0 = int(math.floor(y)), int(math.floor(x))
        fy, fx = y - y0, x - x0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                frames[index + (y0 + dy, x0 + dx)] += 100 * wy * wx
    return frames


def run_com(ds, **params):
    plan, finalize = build_plan([CenterOfMass(**params)], ds)
    parts = ds.partitions(2, target_bytes=64 * ds.frame_bytes)
    return finalize(run_local(parts, plan, [ds.local_payload(p.start, p.stop) for p in parts]),
                    np.ones(ds.n_frames, bool))


def test_the_guess_from_a_center_of_mass_run_fixes_its_parameters():
    truth_y, truth_x = atom_field(shape=(24, 26), scale=1.0)  # mrad
    mrad_y, mrad_x = unorient(truth_y, truth_x, -110.0, True)
    # rectangular pixels: the field is a rotated gradient in mrad, not in pixels, so
    # the guess must use the calibrated shifts
    pixel = (0.5, 0.25)
    ds = open_dataset(spot_frames(mrad_y / pixel[0], mrad_x / pixel[1]),
                      calibration={"scan_step": "0.3 nm", "detector_pixel": ("0.5 mrad", "0.25 mrad")})
    first = run_com(ds, scan_rotation=40.0)
    guess = guess_corrections(first)
    assert isinstance(guess, CorrectionGuess)
    assert same_angle(guess.scan_rotation, -110.0) and guess.flip_y, str(guess)
    fixed = run_com(ds, **guess.params())
    np.testing.assert_allclose(fixed["com/shift_y_calibrated"].data, truth_y, atol=0.01)
    np.testing.assert_allclose(fixed["com/shift_x_calibrated"].data, truth_x, atol=0.01)
    again = guess_corrections(fixed)  # the guess of a corrected run is that run's parameters
    assert same_angle(again.scan_rotation, guess.scan_rotation, 1e-6) and again.flip_y == guess.flip_y


def test_results_without_a_center_of_mass_are_refused():
    from stem_explorer.analyses import SumFrame

    ds = open_dataset(np.ones((4, 4, 5, 5), np.float32))
    plan, finalize = build_plan([SumFrame()], ds)
    parts = ds.partitions(1)
    results = finalize(run_local(parts, plan, [ds.local_payload(p.start, p.stop) for p in parts]), np.ones(16, bool))
    with pytest.raises(AnalysisError, match="run CenterOfMass first"):
        guess_corrections(results)

"""Every analysis against the plain-numpy reference, in every dtype and odd shapes,
through both kernel paths, run in this process (the cluster path is tested in
test_session.py)."""

import numpy as np
import pytest

import _reference as ref
from stem_explorer import masks
from stem_explorer.analyses import (
    FEM,
    CenterOfMass,
    MaxFrame,
    MeanFrame,
    PickFrame,
    RadialProfile,
    RoiSum,
    StdFrame,
    SumFrame,
    VirtualDetector,
    build_plan,
)
from stem_explorer.engine import run_local
from stem_explorer.errors import AnalysisError, FormatError, MaskError
from stem_explorer.io import open_dataset

DTYPES = ["uint8", "uint16", ">u2", "int32", "int64", "float16", "float32"]
SHAPES = {
    "nonsquare": ((5, 7), (9, 6)),
    "line": ((11,), (8, 8)),
    "single": ((1,), (5, 7)),
    "single2d": ((1, 1), (6, 5)),
}


def make_data(nav, sig, dtype, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        data = rng.normal(100, 30, nav + sig)
    else:
        top = min(np.iinfo(np.dtype(dtype)).max, 4000)
        data = rng.integers(0, top, nav + sig)
    return data.astype(dtype)


def local_results(tmp_path, data, analyses, kernel="auto", target_bytes=700, descan=None):
    """Write ``data`` as a raw file and run ``analyses`` partition by partition
    (with ``descan``, a Descan, applied)."""
    path = tmp_path / "data.raw"
    data.tofile(path)
    nav, sig = data.shape[:-2], data.shape[-2:]
    ds = open_dataset(path, nav_shape=nav, sig_shape=sig, dtype=data.dtype.str)
    plan, finalize = build_plan(analyses, ds, kernel=kernel, tile_bytes=3 * data.itemsize * sig[0] * sig[1],
                                descan=descan)
    parts = ds.partitions(2, target_bytes=target_bytes)
    accumulators = run_local(parts, plan)
    return finalize(accumulators, np.ones(ds.n_frames, bool)), plan


@pytest.fixture(params=list(SHAPES), ids=list(SHAPES))
def shape(request):
    return SHAPES[request.param]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel", ["auto", "spans", "columns", "sparse", "dense"])
def test_mask_analyses_match_numpy(tmp_path, shape, dtype, kernel):
    nav, sig = shape
    data = make_data(nav, sig, dtype)
    cy, cx = (sig[0] - 1) / 2 + 0.3, (sig[1] - 1) / 2 - 0.4
    bf = masks.Disk(cy, cx, 2.5)
    adf = masks.Ring(cy, cx, 1.5, 4.0)
    edge = masks.Disk(0, sig[1] - 1, 2)  # touches the detector corner
    edges = [0, 1.5, 3, 5]
    analyses = [
        VirtualDetector({"bf": bf, "adf": adf, "edge": edge}),
        CenterOfMass(center=(cy, cx), radius=3.5),
        RadialProfile(center=(cy, cx), edges=edges),
        FEM(adf),
    ]
    results, plan = local_results(tmp_path, data, analyses, kernel)
    # auto: whatever the cost model picks (test_kernels.py checks its choices)
    if kernel != "auto":
        assert kernel in plan.ops[-1].kernel.split("+")
    rtol = 1e-5 if "dense" in plan.ops[-1].kernel else 1e-10
    for name, mask in {"bf": bf, "adf": adf, "edge": edge}.items():
        expected = ref.virtual_image(data, mask.rasterize(sig))
        np.testing.assert_allclose(results[f"vd/{name}"].data, expected, rtol=rtol, atol=1e-3)
        assert results[f"vd/{name}"].data.shape == nav
    sy, sx, total = ref.center_of_mass(data, cy, cx, 3.5)
    np.testing.assert_allclose(results["com/shift_y"].data, sy, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(results["com/shift_x"].data, sx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(results["com/total"].data, total, rtol=rtol)
    np.testing.assert_allclose(results["radial/profile"].data, ref.radial_profile(data, cy, cx, edges), rtol=rtol, atol=1e-4)
    mean, var = ref.ring_moments(data, adf.rasterize(sig))
    np.testing.assert_allclose(results["fem/mean"].data, mean, rtol=1e-10)
    np.testing.assert_allclose(results["fem/variance"].data, var, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_frame_analyses_match_numpy(tmp_path, shape, dtype):
    nav, sig = shape
    data = make_data(nav, sig, dtype, seed=1)
    roi = np.zeros(nav, bool)
    roi.flat[:: 2] = True
    last = tuple(n - 1 for n in nav)
    analyses = [SumFrame(), MeanFrame(), StdFrame(), MaxFrame(), PickFrame([last, tuple(0 for _ in nav)]), RoiSum(roi)]
    results, _ = local_results(tmp_path, data, analyses)
    f = ref.frames(data)
    np.testing.assert_array_equal(results["sum/frame"].data, f.sum(axis=0))
    np.testing.assert_allclose(results["mean/frame"].data, f.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(results["std/frame"].data, f.std(axis=0), rtol=1e-9, atol=1e-9)
    native = data.astype(data.dtype.newbyteorder("="))
    np.testing.assert_array_equal(results["max/frame"].data, native.reshape((-1,) + sig).max(axis=0))
    assert results["max/frame"].data.dtype == native.dtype
    picked = results["pick/frames"].data
    np.testing.assert_array_equal(picked[0], data[last])
    np.testing.assert_array_equal(picked[1], data[tuple(0 for _ in nav)])
    np.testing.assert_array_equal(results["roi/frame"].data, f[roi.ravel()].sum(axis=0))


WIDE = {  # 64-bit integers near the top of their range (int64 accumulators wrapped)
    "int64": (2**62, 2**63 - 1),
    ">i8": (-(2**63), -(2**62)),
    "uint64": (2**63, 2**64 - 1),
}


@pytest.mark.parametrize("kernel", ["auto", "spans", "columns", "sparse", "dense"])
@pytest.mark.parametrize("dtype", list(WIDE))
def test_wide_integers_near_their_limits_match_numpy(tmp_path, dtype, kernel):
    """A virtual detector gave 2.3e19 where numpy gives 1.3e20, and the centre of mass
    was 50-96 px off: sums of such values must not wrap."""
    nav, sig = (3, 5), (9, 11)
    low, high = WIDE[dtype]
    data = np.random.default_rng(6).integers(low, high, nav + sig, dtype=np.dtype(dtype).newbyteorder("=")).astype(dtype)
    cy, cx = 4.3, 5.2
    bf, adf = masks.Disk(cy, cx, 3), masks.Ring(cy, cx, 2, 5)
    edges = [0, 2, 4, 6]
    analyses = [
        VirtualDetector({"bf": bf, "adf": adf, "all": masks.Rectangle(-1, -1, 20, 20)}),
        CenterOfMass(center=(cy, cx)),
        CenterOfMass(center=(cy, cx), radius=3.5),
        RadialProfile(center=(cy, cx), edges=edges),
        FEM(adf),
        SumFrame(), MeanFrame(), StdFrame(), MaxFrame(),
    ]
    results, plan = local_results(tmp_path, data, analyses, kernel)
    rtol = 1e-6 if "dense" in plan.ops[-1].kernel else 1e-12  # dense: float32 products
    for name, mask in {"bf": bf, "adf": adf}.items():
        np.testing.assert_allclose(results[f"vd/{name}"].data, ref.virtual_image(data, mask.rasterize(sig)), rtol=rtol)
    np.testing.assert_allclose(results["vd/all"].data, ref.frames(data).sum(axis=(1, 2)).reshape(nav), rtol=rtol)
    for label, radius in (("com", None), ("com_2", 3.5)):
        sy, sx, total = ref.center_of_mass(data, cy, cx, radius)
        np.testing.assert_allclose(results[f"{label}/shift_y"].data, sy, atol=1e-6)
        np.testing.assert_allclose(results[f"{label}/shift_x"].data, sx, atol=1e-6)
        np.testing.assert_allclose(results[f"{label}/total"].data, total, rtol=1e-12)
    np.testing.assert_allclose(results["radial/profile"].data, ref.radial_profile(data, cy, cx, edges), rtol=rtol)
    mean, var = ref.ring_moments(data, adf.rasterize(sig))
    np.testing.assert_allclose(results["fem/mean"].data, mean, rtol=1e-12)
    np.testing.assert_allclose(results["fem/variance"].data, var, rtol=1e-6)
    f = ref.frames(data)
    np.testing.assert_allclose(results["sum/frame"].data, f.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(results["mean/frame"].data, f.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(results["std/frame"].data, f.std(axis=0), rtol=1e-6)
    native = data.astype(data.dtype.newbyteorder("="))
    np.testing.assert_array_equal(results["max/frame"].data, native.reshape((-1,) + sig).max(axis=0))


@pytest.mark.parametrize("dtype", ["complex64", "complex128", ">c8"])
def test_complex_data_is_refused_at_open(tmp_path, dtype):
    """Complex data opened, then failed inside numba at the first job."""
    data = np.ones((2, 3, 4, 5), dtype)
    path = tmp_path / "c.raw"
    data.tofile(path)
    with pytest.raises(FormatError, match=f"c.raw.*{np.dtype(dtype).name}.*real"):
        open_dataset(path, nav_shape=(2, 3), sig_shape=(4, 5), dtype=data.dtype.str)
    with pytest.raises(FormatError, match=f"{np.dtype(dtype).name}.*np.abs"):
        open_dataset(data)


def test_boolean_frames_count_as_zeros_and_ones(tmp_path):
    data = make_data((3, 4), (6, 7), "uint8") > 2000
    analyses = [VirtualDetector(masks.Disk(3, 3, 2)), CenterOfMass(), SumFrame(), StdFrame()]
    results, _ = local_results(tmp_path, data, analyses)
    np.testing.assert_allclose(results["vd/mask0"].data, ref.virtual_image(data, masks.Disk(3, 3, 2).rasterize((6, 7))))
    np.testing.assert_allclose(results["sum/frame"].data, ref.frames(data).sum(axis=0))


def test_std_is_stable_for_large_mean(tmp_path):
    rng = np.random.default_rng(3)
    data = (1e4 + rng.normal(0, 0.01, (4, 6, 5, 5))).astype(np.float32)
    results, _ = local_results(tmp_path, data, [StdFrame()])
    f = data.reshape(-1, 5, 5).astype(np.float64)
    np.testing.assert_allclose(results["std/frame"].data, f.std(axis=0), rtol=1e-6)


def test_com_rotation_flip_divergence_curl(tmp_path):
    # a pure shift pattern: frame (i, j) is a point at (c + dy, c + dx)
    nav, sig = (6, 8), (16, 16)
    data = np.zeros(nav + sig, np.float32)
    dy = np.linspace(-2, 2, nav[0])[:, None] * np.ones(nav)
    dx = np.ones(nav) * np.linspace(-3, 3, nav[1])[None, :]
    for i in range(nav[0]):
        for j in range(nav[1]):
            data[i, j, int(7 + dy[i, j]), int(7 + dx[i, j])] = 10
    results, _ = local_results(tmp_path, data, [CenterOfMass(center=(7, 7))])
    sy, sx = np.floor(7 + dy) - 7, np.floor(7 + dx) - 7
    np.testing.assert_allclose(results["com/shift_y"].data, sy, atol=1e-6)
    np.testing.assert_allclose(results["com/divergence"].data, np.gradient(sy, axis=0) + np.gradient(sx, axis=1), atol=1e-6)
    np.testing.assert_allclose(results["com/curl"].data, np.gradient(sy, axis=1) - np.gradient(sx, axis=0), atol=1e-6)
    rotated, _ = local_results(tmp_path, data, [CenterOfMass(center=(7, 7), scan_rotation=90, flip_y=True)])
    # flip y, then rotate by 90 degrees: (x, y) -> (-y', x) with y' = -y
    np.testing.assert_allclose(rotated["com/shift_x"].data, sy, atol=1e-6)
    np.testing.assert_allclose(rotated["com/shift_y"].data, sx, atol=1e-6)


@pytest.mark.parametrize("edges", [[0, 3, 4, 5, 8.5], [2, 5, 7], [0, 1]])
def test_radial_rings_hold_exactly_the_pixels_of_ring_masks(tmp_path, edges):
    """Ring(cy, cx, 4, 5) held the pixels at exactly radius 5, the profile's bin [4, 5)
    did not: one rule (inner boundary open, outer closed) for both."""
    nav, sig = (2, 3), (21, 19)
    data = make_data(nav, sig, "uint16", seed=12)
    cy, cx = 10, 9  # an integer centre: pixels at exactly 1, 3, 4, 5 pixels (3-4-5 triangles)
    shapes = [masks.Disk(cy, cx, edges[1]) if edges[0] == 0 else masks.Ring(cy, cx, edges[0], edges[1])]
    shapes += [masks.Ring(cy, cx, a, b) for a, b in zip(edges[1:-1], edges[2:])]
    analyses = [RadialProfile(center=(cy, cx), edges=edges), VirtualDetector(shapes)]
    results, _ = local_results(tmp_path, data, analyses)
    counts = [shape.rasterize(sig).sum() for shape in shapes]
    np.testing.assert_array_equal(results["radial/ring_pixels"].data, counts)
    sums = np.stack([results[f"vd/mask{i}"].data for i in range(len(shapes))], axis=-1)
    np.testing.assert_allclose(results["radial/profile"].data, sums / counts, rtol=1e-12)


def test_radial_profile_refuses_more_rings_than_pixels(tmp_path):
    data = make_data((2, 2), (6, 5), "uint16")
    with pytest.raises(AnalysisError, match="more rings than the detector's 30 pixels"):
        local_results(tmp_path, data, [RadialProfile(n_bins=100)])
    with pytest.raises(AnalysisError, match="n_bins must be an integer from 1 to 4096"):
        RadialProfile(n_bins=10**12)  # refused by its declaration, before any data


@pytest.mark.parametrize("dtype", ["uint16", ">u2", "float32", "int64", "float16"])
def test_com_zero_count_frames_leave_their_neighbours_derivatives(tmp_path, dtype):
    """A frame with zero counts has NaN shifts; its NaN spread into the divergence and
    curl of its four neighbours."""
    nav, sig = (6, 7), (9, 8)
    data = make_data(nav, sig, dtype, seed=11)
    empty = [(2, 3), (0, 0), (5, 6), (4, 1), (4, 2), (1, 6), (2, 6), (3, 6)]  # inside, corners, pairs, a column run
    for position in empty:
        data[position] = 0
    results, _ = local_results(tmp_path, data, [CenterOfMass(center=(4.2, 3.6))])
    sy, sx, total = ref.center_of_mass(data, 4.2, 3.6)
    missing = total == 0
    assert missing.sum() == len(empty)
    np.testing.assert_allclose(results["com/shift_y"].data, sy, atol=1e-6)  # NaN where missing
    np.testing.assert_allclose(results["com/shift_x"].data, sx, atol=1e-6)
    divergence = ref.gradient_skipping_missing(sy, 0) + ref.gradient_skipping_missing(sx, 1)
    curl = ref.gradient_skipping_missing(sy, 1) - ref.gradient_skipping_missing(sx, 0)
    np.testing.assert_allclose(results["com/divergence"].data, divergence, atol=1e-6)
    np.testing.assert_allclose(results["com/curl"].data, curl, atol=1e-6)
    for name in ("divergence", "curl"):  # the four neighbours of the empty frame at (2, 3)
        assert np.isfinite(results[f"com/{name}"].data[[1, 3, 2, 2], [3, 3, 2, 4]]).all()
        assert np.isnan(results[f"com/{name}"].data[missing]).all()
    assert np.array_equal(np.isnan(results["com/magnitude"].data), missing)


def test_com_derivatives_without_missing_positions_are_numpy_gradient():
    from stem_explorer.analyses.com import _gradient

    field = np.random.default_rng(2).normal(size=(5, 7))
    for axis, grad in enumerate(_gradient(field)):
        np.testing.assert_allclose(grad, np.gradient(field, axis=axis), rtol=1e-14)
    line = np.array([[1.0, np.nan, 4.0]])
    np.testing.assert_array_equal(_gradient(line)[0], np.zeros((1, 3)))  # a length-1 axis
    np.testing.assert_array_equal(_gradient(line)[1], [[np.nan, np.nan, np.nan]])  # no known neighbours


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_all_kernel_paths_agree_on_many_masks(tmp_path, dtype):
    data = make_data((4, 9), (12, 10), dtype)
    rings = {f"r{i}": masks.Ring(5.5, 4.5, i + 0.5, i + 1.5) for i in range(6)}
    rings["edge"] = masks.Rectangle(0, 0, 12, 1)  # a whole detector column: runs of length 1
    kernels = ("auto", "spans", "columns", "sparse", "dense")
    by_kernel = {k: local_results(tmp_path, data, [VirtualDetector(rings)], k)[0] for k in kernels}
    auto_rtol = 1e-5 if "dense" in local_results(tmp_path, data, [VirtualDetector(rings)])[1].ops[-1].kernel else 1e-12
    for key in by_kernel["sparse"]:
        np.testing.assert_allclose(by_kernel["auto"][key].data, by_kernel["sparse"][key].data, rtol=auto_rtol)
        for exact in ("spans", "columns"):
            np.testing.assert_allclose(by_kernel[exact][key].data, by_kernel["sparse"][key].data, rtol=1e-12)
        np.testing.assert_allclose(by_kernel["dense"][key].data, by_kernel["sparse"][key].data, rtol=1e-5)


def test_weighted_and_combined_masks(tmp_path):
    data = make_data((3, 4), (10, 12), "float32")
    weights = np.random.default_rng(5).normal(size=(10, 12))
    combo = masks.Disk(5, 6, 4) - masks.Disk(5, 6, 1.5)
    results, _ = local_results(tmp_path, data, [VirtualDetector({"w": masks.Weighted(weights), "c": combo})], "sparse")
    np.testing.assert_allclose(results["vd/w"].data, ref.virtual_image(data, masks.Weighted(weights).rasterize((10, 12))), rtol=1e-5)
    np.testing.assert_allclose(results["vd/c"].data, ref.virtual_image(data, combo.rasterize((10, 12))), rtol=1e-6)


def test_one_pass_serves_all_analyses(tmp_path):
    data = make_data((3, 5), (8, 8), "uint16")
    analyses = [VirtualDetector(masks.Disk(4, 4, 2)), CenterOfMass(), RadialProfile(n_bins=3), SumFrame(), MeanFrame(), StdFrame()]
    _, plan = local_results(tmp_path, data, analyses)
    kinds = [op.key[0] for op in plan.ops]
    assert kinds.count("mask_product") == 1  # all mask columns in one matrix
    assert kinds.count("frame_moments") == 1  # mean and std share one reduction
    assert plan.ops[-1].width == 1 + 3  # the disk and three rings
    assert kinds.count("com_moments") == 1


def test_partial_results_have_nan_where_not_computed(tmp_path):
    data = make_data((4, 4), (6, 6), "uint16")
    path = tmp_path / "d.raw"
    data.tofile(path)
    ds = open_dataset(path, nav_shape=(4, 4), sig_shape=(6, 6), dtype="uint16")
    plan, finalize = build_plan([VirtualDetector(masks.Disk(3, 3, 2)), CenterOfMass()], ds)
    parts = ds.partitions(2, target_bytes=6 * 6 * 2 * 4)
    accs = run_local(parts[:1], plan)
    filled = np.zeros(16, bool)
    filled[parts[0].start : parts[0].stop] = True
    res = finalize(accs, filled)
    image = res["vd/mask0"].data.ravel()
    assert np.all(np.isfinite(image[filled])) and np.all(np.isnan(image[~filled]))
    assert np.all(np.isnan(res["com/shift_x"].data.ravel()[~filled]))
    assert res.provenance["complete"] is False


@pytest.mark.parametrize(
    "analysis, phrase",
    [
        (lambda: CenterOfMass(center=(float("nan"), 3)), "finite"),
        (lambda: CenterOfMass(center=(100, 3)), "outside the detector"),
        (lambda: CenterOfMass(radius=-1), "positive"),
        (lambda: CenterOfMass(radius=float("nan")), "positive"),
        (lambda: CenterOfMass(scan_rotation=float("inf")), "scan_rotation"),
        (lambda: RadialProfile(), "n_bins"),
        (lambda: RadialProfile(edges=[3, 1]), "increasing"),
        (lambda: RadialProfile(n_bins=2, max_radius=float("nan")), "max_radius"),
        (lambda: RoiSum(np.ones((2, 2), bool)), "shape"),
        (lambda: RoiSum(np.zeros((3, 4), bool)), "no scan position"),
        (lambda: RoiSum(np.ones((3, 4))), "boolean"),
        (lambda: PickFrame((3, 0)), "outside the scan"),
        (lambda: PickFrame([(1,)]), "indices"),
        (lambda: VirtualDetector([]), "at least one mask"),
        (lambda: VirtualDetector("disk"), "mask"),
    ],
)
def test_bad_parameters_are_clear_errors(tmp_path, analysis, phrase):
    data = make_data((3, 4), (8, 8), "uint16")
    path = tmp_path / "d.raw"
    data.tofile(path)
    ds = open_dataset(path, nav_shape=(3, 4), sig_shape=(8, 8), dtype="uint16")
    with pytest.raises(AnalysisError, match=phrase):
        build_plan([analysis()], ds)


def test_mask_outside_detector_is_a_mask_error(tmp_path):
    data = make_data((2, 2), (8, 8), "uint16")
    path = tmp_path / "d.raw"
    data.tofile(path)
    ds = open_dataset(path, nav_shape=(2, 2), sig_shape=(8, 8), dtype="uint16")
    with pytest.raises(MaskError, match="outside the detector"):
        build_plan([VirtualDetector(masks.Disk(50, 50, 3))], ds)


def test_analysis_descriptions_round_trip_to_code():
    import stem_explorer as se

    vd = VirtualDetector({"bf": masks.Disk(4, 4, 2)})
    rebuilt = eval(vd.code(), {"VirtualDetector": VirtualDetector, "masks": se.masks, "np": np})
    assert rebuilt.to_dict() == vd.to_dict()
    com = CenterOfMass(center=(1.0, 2.0), radius=3.0, scan_rotation=10.0, flip_y=True)
    assert eval(com.code(), {"CenterOfMass": CenterOfMass}) == com


def test_exact_integer_moments_over_many_frames_per_tile():
    from stem_explorer.engine import FrameMoments

    rng = np.random.default_rng(9)
    frames = (65535 - rng.integers(0, 3, (40000, 4))).astype(np.uint16)  # > 2**15 frames in one tile
    op = FrameMoments()
    state = op.start(0, len(frames), 4, frames.dtype)
    op.feed(state, 0, frames)
    n, mean, m2 = op.finish(state)
    assert n == 40000
    np.testing.assert_allclose(mean, frames.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(m2 / n, frames.astype(np.float64).var(axis=0), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["uint16", ">u2", "float32"])
def test_com_moments_equal_three_mask_columns(tmp_path, dtype):
    """The row-span CoM op gives what the GEMM identity says: three mask columns."""
    from stem_explorer.analyses.base import pixel_grid

    data = make_data((5, 6), (13, 11), dtype, seed=4)
    path = tmp_path / "d.raw"
    data.tofile(path)
    ds = open_dataset(path, nav_shape=(5, 6), sig_shape=(13, 11), dtype=data.dtype.str)
    cy, cx, r = 6.2, 4.9, 4.5
    y, x = pixel_grid(ds)
    inside = (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    columns = np.stack([inside, inside * (y - cy), inside * (x - cx)], axis=1)
    as_masks = VirtualDetector({name: masks.Weighted(columns[:, i].reshape(13, 11)) for i, name in enumerate("tyx")})
    results, _ = local_results(tmp_path, data, [CenterOfMass(center=(cy, cx), radius=r), as_masks], "sparse")
    np.testing.assert_allclose(results["com/total"].data, results["vd/t"].data, rtol=1e-6)
    np.testing.assert_allclose(results["com/shift_y"].data, results["vd/y"].data / results["vd/t"].data, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results["com/shift_x"].data, results["vd/x"].data / results["vd/t"].data, rtol=1e-5, atol=1e-6)


def test_unknown_kernel_is_refused_before_planning(tmp_path):
    data = make_data((2, 3), (8, 8), "uint16")
    with pytest.raises(AnalysisError, match="kernel must be one of 'auto', 'spans', 'columns'.*got 'gemm'"):
        local_results(tmp_path, data, [SumFrame()], kernel="gemm")

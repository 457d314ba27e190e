"""The fast kernels at the edges of their integer fast paths: values at the dtype's
maximum, detector widths at the uint32 bound, frame counts past one block, and the
shifted float moments; each against numpy in float64 (exact for these integers)."""

import numpy as np
import pytest

from stem_explorer.engine import kernels, ops


def feed_all(op, frames, tile=None):
    """Run ``op`` over ``frames`` (``(n, pixels)``) in tiles; return its partial."""
    state = op.start(0, len(frames), frames.shape[1], frames.dtype)
    step = tile or len(frames)
    for lo in range(0, len(frames), step):
        op.feed(state, lo, frames[lo : lo + step])
    return op.finish(state)


def test_fits_u32_bound():
    assert kernels.fits_u32(np.uint16, 2**16)  # 65535 * 65536 < 2**32
    assert kernels.fits_u32(np.uint16, 2**16 + 1)  # 65535 * 65537 == 2**32 - 1
    assert not kernels.fits_u32(np.uint16, 2**16 + 2)
    assert kernels.fits_u32(np.uint8, 2**24)
    assert not kernels.fits_u32(np.int16, 2)  # signed: the generic path
    assert not kernels.fits_u32(np.uint32, 1)
    assert not kernels.fits_u32(np.float32, 1)


def test_fits_int64_bound():
    assert kernels.fits_int64(np.uint32, 2**31)  # (2**32 - 1) * 2**31 < 2**63
    assert not kernels.fits_int64(np.uint32, 2**31 + 1)
    assert kernels.fits_int64(np.int32, 2**32 - 1)  # the magnitude of -2**31 counts
    assert not kernels.fits_int64(np.int32, 2**32)
    assert kernels.fits_int64(np.uint16, 4096**3)  # every sum over a 4096 x 4096 detector
    assert not kernels.fits_int64(np.int64, 1)  # -2**63 has no int64 negation
    assert not kernels.fits_int64(np.uint64, 1)
    assert not kernels.fits_int64(np.float32, 1)


@pytest.mark.parametrize(
    "dtype, rows, pixels, scratch",
    [
        ("uint16", 128, 128 * 128, np.uint32),
        ("int32", 128, 128 * 128, np.int64),
        ("int32", 4096, 4096 * 4096, np.float64),  # 2**31 * 4096 rows * 2**24 pixels wraps int64
        ("uint32", 4096, 4096 * 4096, np.float64),
        ("int64", 2, 4, np.float64),
        ("float32", 2, 4, np.float64),
    ],
)
def test_column_prefix_accumulates_where_nothing_wraps(dtype, rows, pixels, scratch):
    prefix, zero = kernels.column_prefix(np.dtype(dtype), rows, pixels)
    assert prefix.dtype == scratch and prefix.size == pixels
    assert isinstance(zero, float) == (scratch == np.float64)


WIDE_EXTREMES = {
    "int64": [2**63 - 1, -(2**63), 2**62 + 12345],
    "uint64": [2**64 - 1, 2**63, 2**62 + 1],
    "uint32": [2**32 - 1, 2**31, 7],
}


@pytest.mark.parametrize("kernel", ["spans", "columns", "sparse", "dense"])
@pytest.mark.parametrize("dtype", list(WIDE_EXTREMES))
def test_mask_paths_at_wide_integer_extremes(kernel, dtype):
    """Sums of 64-bit values near their limits wrapped in the int64 accumulators."""
    values = np.array(WIDE_EXTREMES[dtype], dtype)
    frames = np.stack([np.full(24 * 20, v, dtype) for v in values])
    frames[2, ::3] = values[0]
    y, x = np.indices((24, 20))
    disk = (np.hypot(y - 11, x - 9) <= 7).ravel()
    matrix = np.stack([disk, np.ones(24 * 20, bool)], axis=1).astype(np.float32)
    op = ops.MaskProduct(matrix, kernel=kernel, dtype=frames.dtype, sig_shape=(24, 20))
    expected = frames.astype(np.float64) @ matrix.astype(np.float64)
    np.testing.assert_allclose(feed_all(op, frames), expected, rtol=1e-6 if kernel == "dense" else 1e-14)


@pytest.mark.parametrize("dtype", list(WIDE_EXTREMES))
def test_com_moments_at_wide_integer_extremes(dtype):
    values = np.array(WIDE_EXTREMES[dtype], dtype)
    sy, sx = 9, 7
    frames = np.stack([np.full(sy * sx, v, dtype) for v in values])
    frames[1, : sx * 4] = values[2]  # top rows darker: the centre of mass moves down
    pixels = np.arange(sy * sx)
    out = feed_all(ops.CenterOfMassMoments(pixels, (sy, sx), (4.0, 3.0)), frames)
    y, x = np.divmod(pixels, sx)
    f = frames.astype(np.float64)
    expected = np.stack([f.sum(1), (f * (y - 4.0)).sum(1), (f * (x - 3.0)).sum(1)], axis=1)
    np.testing.assert_allclose(out[:, 0], expected[:, 0], rtol=1e-14)
    # the moments about the centre cancel to a small part of the total: compare shifts
    np.testing.assert_allclose(out[:, 1:] / out[:, :1], expected[:, 1:] / expected[:, :1], atol=1e-9)


@pytest.mark.parametrize(
    "op",
    [
        lambda: ops.FrameSum(),
        lambda: ops.FrameMoments(),
        lambda: ops.MaskedMoments(np.arange(5, 30)),
        lambda: ops.NavMaskedSum([0, 2, 3]),
        lambda: ops.CenterOfMassMoments(np.arange(40), (6, 7), (2.0, 3.0)),
        lambda: ops.MaskProduct(np.eye(42, 3, dtype=np.float32), kernel="sparse", sig_shape=(6, 7)),
        lambda: ops.MaskProduct(np.eye(42, 3, dtype=np.float32), kernel="spans", sig_shape=(6, 7)),
        lambda: ops.MaskProduct(np.eye(42, 3, dtype=np.float32), kernel="columns", sig_shape=(6, 7)),
    ],
)
def test_float16_frames_reach_every_numba_op_as_float32(op):
    """MRC mode 12 is float16, which numba cannot compute with on the CPU."""
    frames = np.random.default_rng(3).normal(100, 30, (5, 42)).astype(np.float16)
    wide = frames.astype(np.float32)
    np.testing.assert_array_equal(_flat(feed_all(op(), frames)), _flat(feed_all(op(), wide)))


def _flat(partial):
    items = partial if isinstance(partial, tuple) else (partial,)
    return np.concatenate([np.ravel(np.asarray(item, np.float64)) for item in items])


@pytest.mark.parametrize("sx", [256, 257])  # 256: uint32 row sums; 257: the int64 path
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_com_moments_at_the_dtype_maximum(dtype, sx):
    sy = 3
    top = np.iinfo(dtype).max
    rng = np.random.default_rng(1)
    frames = np.full((4, sy * sx), top, dtype)
    frames[1] = rng.integers(0, top, sy * sx)
    pixels = np.arange(sy * sx)
    op = ops.CenterOfMassMoments(pixels, (sy, sx), (1.0, 100.0))
    assert kernels.fits_u32(frames.dtype, sx * sx) == (sx == 256 or dtype == "uint8")
    out = feed_all(op, frames)
    y, x = np.divmod(pixels, sx)
    f = frames.astype(np.float64)
    expected = np.stack([f.sum(1), (f * (y - 1.0)).sum(1), (f * (x - 100.0)).sum(1)], axis=1)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("kernel", ["spans", "columns"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "uint32", ">u2", "float32"])
def test_binary_paths_at_the_dtype_maximum(kernel, dtype):
    """Every pixel at the dtype's maximum through a disk and rings that tile the
    detector: the column sums of 128 rows stay exact (uint32 lanes for 16-bit data)."""
    info = np.finfo(dtype) if np.dtype(dtype).kind == "f" else np.iinfo(dtype)
    top = min(float(info.max), 2.0**20) if np.dtype(dtype).kind == "f" else info.max
    frames = np.full((3, 128 * 128), top, dtype)
    y, x = np.indices((128, 128))
    disk = (np.hypot(y - 60, x - 70) < 20).ravel()
    matrix = np.hstack([disk[:, None], _ring_stack(4)]).astype(np.float32)
    op = ops.MaskProduct(matrix, kernel=kernel, dtype=frames.dtype, sig_shape=(128, 128))
    assert op.kernel == kernel
    out = feed_all(op, frames)
    np.testing.assert_array_equal(out, np.repeat(matrix.sum(axis=0, dtype=np.float64)[None] * float(top), 3, axis=0))


def test_column_runs_of_scattered_pixels():
    """Runs broken by gaps, masks on the box's edges, an empty mask and one pixel."""
    matrix = np.zeros((7 * 5, 4), np.float32)
    matrix[[0, 5, 15, 20, 30, 34], 0] = 1  # column 0 with gaps, and the last pixel
    matrix[[3, 8, 13, 4, 9], 1] = 1  # two touching columns of the right edge
    matrix[17, 3] = 1  # mask 2 is empty
    frames = np.random.default_rng(5).integers(0, 2**16, (4, 35)).astype(np.uint16)
    op = ops.MaskProduct(matrix, kernel="columns", sig_shape=(7, 5))
    np.testing.assert_array_equal(feed_all(op, frames), frames.astype(np.float64) @ matrix)


def test_frame_sum_across_uint32_blocks():
    frames = np.full((2**16 + 5, 3), 65535, np.uint16)
    frames[::7] = 1
    total = feed_all(ops.FrameSum(), frames)
    np.testing.assert_array_equal(total, frames.astype(np.float64).sum(axis=0))


def test_exact_moments_across_uint32_blocks():
    rng = np.random.default_rng(2)
    frames = (65535 - rng.integers(0, 3, (2**16 + 300, 3))).astype(np.uint16)
    op = ops.FrameMoments()
    n, mean, m2 = feed_all(op, frames)
    f = frames.astype(np.float64)
    np.testing.assert_allclose(mean, f.mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(m2 / n, f.var(axis=0), rtol=1e-10)  # blocks merged in float64


@pytest.mark.parametrize("dtype", ["int32", "int16", "float32", "float64"])
def test_shifted_moments_have_no_cancellation(dtype):
    rng = np.random.default_rng(3)
    base = 1e6 if np.dtype(dtype).kind == "f" else 30000
    frames = (base + rng.normal(0, 3, (700, 5))).astype(dtype)
    n, mean, m2 = feed_all(ops.FrameMoments(), frames, tile=64)
    f = frames.astype(np.float64)
    np.testing.assert_allclose(mean, f.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m2 / n, f.var(axis=0), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "float32"])
@pytest.mark.parametrize("tile", [1, 3, 4, 7, 16])
def test_sum_and_moments_four_frames_a_pass_and_the_rest(dtype, tile):
    """The per-pixel accumulators take frames four at a time, then the remainder."""
    frames = np.random.default_rng(8).integers(0, 200, (23, 10)).astype(dtype)
    f = frames.astype(np.float64)
    np.testing.assert_array_equal(feed_all(ops.FrameSum(), frames, tile=tile), f.sum(axis=0))
    n, mean, m2 = feed_all(ops.FrameMoments(), frames, tile=tile)
    np.testing.assert_allclose(mean, f.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(m2 / n, f.var(axis=0), rtol=1e-12)


def test_single_frame_tile_moments_are_zero_variance():
    frames = np.array([[3, 65535, 0]], np.uint16)
    n, mean, m2 = feed_all(ops.FrameMoments(), frames)
    assert n == 1
    np.testing.assert_array_equal(mean, [3, 65535, 0])
    np.testing.assert_array_equal(m2, 0)


def _ring_stack(n_rings, size=128):
    y, x = np.indices((size, size))
    r = np.hypot(y - 63.5, x - 63.5)
    edges = np.linspace(0, r.max() + 1e-9, n_rings + 1)
    label = np.digitize(r, edges) - 1
    return np.stack([(label == k).ravel() for k in range(n_rings)], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    "columns, dtype, expected",
    [
        ("disk", "uint16", "spans"),
        ("disk", "float32", "spans"),
        ("annulus", "uint16", "spans"),  # column runs would read the hole too
        ("annulus", "float32", "dense"),  # float32 needs no conversion for sgemm
        ("rings16", "uint16", "columns"),
        ("rings16", "float32", "columns"),
        ("rings16+weighted_disk", "uint16", "columns+sparse"),
        ("weighted_disk", "uint16", "sparse"),
        ("weighted_full", "uint16", "dense"),
    ],
)
def test_cost_model_choices_on_a_128_detector(columns, dtype, expected):
    y, x = np.indices((128, 128))
    r = np.hypot(y - 63.5, x - 63.5).ravel()
    matrix = {
        "disk": (r < 15)[:, None].astype(np.float32),
        "annulus": ((r >= 19) & (r < 63))[:, None].astype(np.float32),
        "rings16": _ring_stack(16),
        "weighted_disk": np.where(r < 15, 1 + r, 0)[:, None].astype(np.float32),
        "weighted_full": np.stack([1 + r, r * r], axis=1).astype(np.float32),
        "rings16+weighted_disk": np.hstack([_ring_stack(16), np.where(r < 15, 1 + r, 0)[:, None]]).astype(np.float32),
    }[columns]
    assert ops.MaskProduct(matrix, dtype=np.dtype(dtype), sig_shape=(128, 128)).kernel == expected


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_every_path_agrees_on_radial_rings(dtype):
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 4000, (37, 128 * 128)).astype(dtype)
    matrix = _ring_stack(16)
    expected = frames.astype(np.float64) @ matrix.astype(np.float64)
    for kernel in ops.MaskProduct.KERNELS:
        out = feed_all(ops.MaskProduct(matrix, kernel=kernel, dtype=frames.dtype, sig_shape=(128, 128)), frames, tile=16)
        np.testing.assert_allclose(out, expected, rtol=1e-6 if kernel != "sparse" else 1e-12)



@pytest.mark.parametrize("kernel", ops.MaskProduct.KERNELS)
def test_big_endian_tiles_are_swapped_inside_the_kernels(kernel):
    """Merlin 12-bit data is big-endian uint16: the mask kernels read it as stored."""
    rng = np.random.default_rng(6)
    native = rng.integers(0, 4096, (9, 128 * 128)).astype(np.uint16)
    native[0] = 65535 - np.arange(128 * 128, dtype=np.uint16) % 300  # both bytes busy
    stored = native.astype(">u2")
    y, x = np.indices((128, 128))
    r = np.hypot(y - 60, x - 66).ravel()
    matrix = np.stack([r < 20, (r >= 25) & (r < 60), np.where(r < 10, 1 + r, 0)], axis=1).astype(np.float32)
    op = ops.MaskProduct(matrix, kernel=kernel, dtype=stored.dtype, sig_shape=(128, 128))
    assert op.reads_stored_order(stored.dtype) and not op.reads_stored_order(native.dtype)
    np.testing.assert_allclose(feed_all(op, stored, tile=4), native.astype(np.float64) @ matrix, rtol=1e-6)


def test_engine_keeps_stored_order_only_when_every_op_can_read_it(tmp_path):
    from stem_explorer import masks
    from stem_explorer.analyses import SumFrame, VirtualDetector, build_plan
    from stem_explorer.engine import run_local
    from stem_explorer.io import open_dataset

    data = np.random.default_rng(7).integers(0, 4096, (6, 5, 16, 12)).astype(">u2")
    data.tofile(tmp_path / "d.raw")
    ds = open_dataset(tmp_path / "d.raw", nav_shape=(6, 5), sig_shape=(16, 12), dtype=">u2")
    disk = masks.Disk(8, 6, 4)
    expected = np.einsum("yxij,ij->yx", data.astype(np.float64), disk.rasterize((16, 12)))
    for analyses in ([VirtualDetector(disk)], [VirtualDetector(disk), SumFrame()]):
        plan, finalize = build_plan(analyses, ds, tile_bytes=7 * 16 * 12 * 2)
        results = finalize(run_local(ds.partitions(2, target_bytes=16 * 12 * 2 * 8), plan), np.ones(30, bool))
        np.testing.assert_allclose(results["vd/mask0"].data, expected)

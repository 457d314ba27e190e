"""Tests of stem_explorer.masks: shapes, rasterisation, JSON, and mask stacks.

Reference rasters are computed independently over the full detector grid with the
inequalities of the coordinate convention (pixel (y, x) has its centre at (y, x)).
"""

import dataclasses
import json
import math
import pickle

import numpy as np
import pytest
import scipy.ndimage
import scipy.sparse

from stem_explorer.errors import MaskError
from stem_explorer import masks as M
from stem_explorer.masks import (
    Difference,
    Disk,
    MaskStack,
    Point,
    Polygon,
    Rectangle,
    Ring,
    Scaled,
    SymmetricSpots,
    Union,
    Weighted,
    from_dict,
    mask_from_json,
    mask_to_json,
    stack_masks,
    validate_mask_dict,
)

SIG = (37, 53)  # deliberately non-square


def grid(sig_shape=SIG):
    yy, xx = np.mgrid[0 : sig_shape[0], 0 : sig_shape[1]]
    return yy.astype(np.float64), xx.astype(np.float64)


def ref_disk(cy, cx, r, sig_shape=SIG):
    yy, xx = grid(sig_shape)
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2).astype(np.float32)


def ref_ring(cy, cx, ri, ro, sig_shape=SIG):
    yy, xx = grid(sig_shape)
    d2 = (yy - cy) ** 2 + (xx - cx) ** 2
    return ((ri**2 < d2) & (d2 <= ro**2)).astype(np.float32)


def ref_rect(y0, x0, h, w, sig_shape=SIG):
    yy, xx = grid(sig_shape)
    return ((yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)).astype(np.float32)


def ref_convex_polygon(vertices, sig_shape=SIG):
    """Half-plane test: inside (or on) every edge of a convex polygon."""
    yy, xx = grid(sig_shape)
    v = np.asarray(vertices, float)
    signs = []
    for (ya, xa), (yb, xb) in zip(v, np.roll(v, -1, axis=0)):
        signs.append((yb - ya) * (xx - xa) - (xb - xa) * (yy - ya))
    signs = np.array(signs)
    eps = 1e-9
    return (np.all(signs >= -eps, axis=0) | np.all(signs <= eps, axis=0)).astype(np.float32)


def assert_raises_mask_error(fn, *phrases):
    with pytest.raises(MaskError) as info:
        fn()
    message = str(info.value)
    for phrase in phrases:
        assert phrase in message, message
    return message


# --- geometric shapes vs brute-force references


DISKS = [
    (18.0, 26.0, 7.0),
    (10.3, 20.7, 5.5),
    (0.0, 0.0, 4.0),  # centred on a corner pixel: clipped
    (-2.3, 50.7, 6.2),  # centre off the detector, partly on it
    (36.5, 26.25, 9.9),
    (18.0, 26.0, 100.0),  # covers the whole detector
    (5.0, 5.0, 1.0),  # 5 pixels (centre and 4 neighbours at distance exactly 1)
]


@pytest.mark.parametrize("cy,cx,r", DISKS)
def test_disk_matches_reference(cy, cx, r):
    raster = Disk(cy, cx, r).rasterize(SIG)
    assert raster.dtype == np.float32 and raster.shape == SIG
    np.testing.assert_array_equal(raster, ref_disk(cy, cx, r))


def test_disk_radius_one_is_a_plus():
    assert Disk(5, 5, 1).rasterize(SIG).sum() == 5


@pytest.mark.parametrize(
    "cy,cx,ri,ro", [(18, 26, 3, 8), (10.4, 40.6, 0, 5.5), (-3.1, 20.2, 4.5, 9), (30.5, 50.5, 2.2, 2.9)]
)
def test_ring_matches_reference_and_equals_disk_difference(cy, cx, ri, ro):
    raster = Ring(cy, cx, ri, ro).rasterize(SIG)
    np.testing.assert_array_equal(raster, ref_ring(cy, cx, ri, ro))
    if ri > 0:
        diff = (Disk(cy, cx, ro) - Disk(cy, cx, ri)).rasterize(SIG)
        np.testing.assert_array_equal(raster, diff)
        np.testing.assert_array_equal(raster, ref_disk(cy, cx, ro) - ref_disk(cy, cx, ri))


def test_ring_with_zero_inner_radius_leaves_out_exact_centre_pixel():
    raster = Ring(10, 10, 0, 3).rasterize(SIG)
    assert raster[10, 10] == 0 and raster[10, 11] == 1


@pytest.mark.parametrize(
    "y0,x0,h,w",
    [(2, 3, 5, 7), (2.5, 3.2, 4.1, 6.9), (-4, -4, 10, 10), (30, 45, 20, 20), (0, 0, 37, 53)],
)
def test_rectangle_matches_reference(y0, x0, h, w):
    np.testing.assert_array_equal(Rectangle(y0, x0, h, w).rasterize(SIG), ref_rect(y0, x0, h, w))


def test_adjacent_rectangles_tile_without_overlap():
    left = Rectangle(4, 5.5, 10, 7.25).rasterize(SIG)
    right = Rectangle(4, 12.75, 10, 8).rasterize(SIG)
    whole = Rectangle(4, 5.5, 10, 15.25).rasterize(SIG)
    assert np.all(left + right <= 1)
    np.testing.assert_array_equal(left + right, whole)


def test_polygon_square_on_half_integers_equals_rectangle():
    square = Polygon([(1.5, 2.5), (1.5, 8.5), (6.5, 8.5), (6.5, 2.5)])
    np.testing.assert_array_equal(square.rasterize(SIG), Rectangle(1.5, 2.5, 5, 6).rasterize(SIG))


def test_polygon_square_on_integers_includes_its_boundary():
    square = Polygon([(2, 3), (2, 8), (6, 8), (6, 3)])
    # closed: rows 2..6 and columns 3..8, i.e. the half-open rectangle one pixel larger
    np.testing.assert_array_equal(square.rasterize(SIG), Rectangle(2, 3, 5, 6).rasterize(SIG))


def test_polygon_vertex_order_does_not_matter():
    vertices = [(3.2, 4.1), (30.7, 10.3), (20.1, 45.9), (5.5, 40.0)]
    a = Polygon(vertices).rasterize(SIG)
    b = Polygon(vertices[::-1]).rasterize(SIG)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "vertices",
    [
        [(3.2, 4.1), (30.7, 10.3), (20.1, 45.9)],  # triangle
        [(18 + 12 * math.sin(t), 26.3 + 15 * math.cos(t)) for t in np.linspace(0, 2 * math.pi, 7)[:-1]],
        [(-5, -5), (10, -5), (10, 20), (-5, 20)],  # clipped by the detector corner
        [(2, 2), (2, 12), (12, 12)],  # integer vertices: centres on edges
    ],
)
def test_convex_polygon_matches_half_plane_reference(vertices):
    np.testing.assert_array_equal(Polygon(vertices).rasterize(SIG), ref_convex_polygon(vertices))


def test_triangle_area_roughly_right():
    vertices = [(3.3, 4.1), (33.7, 10.3), (20.1, 50.9)]
    (ya, xa), (yb, xb), (yc, xc) = vertices
    area = abs((yb - ya) * (xc - xa) - (xb - xa) * (yc - ya)) / 2
    count = Polygon(vertices).rasterize(SIG).sum()
    assert abs(count - area) < 0.05 * area


def test_concave_polygon_l_shape_equals_two_rectangles():
    l_shape = Polygon([(2.5, 3.5), (2.5, 8.5), (10.5, 8.5), (10.5, 20.5), (15.5, 20.5), (15.5, 3.5)])
    expected = ref_rect(2.5, 3.5, 13, 5) + ref_rect(10.5, 8.5, 5, 12)
    np.testing.assert_array_equal(l_shape.rasterize(SIG), expected)


def test_self_intersecting_star_uses_even_odd_rule():
    cy, cx, r = 18.2, 26.3, 15
    points = [(cy - r * math.cos(math.radians(72 * k)), cx + r * math.sin(math.radians(72 * k))) for k in range(5)]
    star = Polygon([points[(2 * k) % 5] for k in range(5)]).rasterize(SIG)
    assert star[18, 26] == 0  # the central pentagon is covered twice: outside by even-odd
    assert star[6, 26] == 1  # inside the top tip
    assert star.sum() > 50


@pytest.mark.parametrize(
    "y,x,pixel",
    [(3, 4, (3, 4)), (2.5, 3.5, (3, 4)), (2.49, 3.51, (2, 4)), (-0.5, 0.4, (0, 0)), (36.4, 52.49, (36, 52))],
)
def test_point_is_nearest_pixel_halves_up(y, x, pixel):
    raster = Point(y, x).rasterize(SIG)
    assert raster.sum() == 1 and raster[pixel] == 1


# --- combinations


def test_union_is_max_and_operator_flattens():
    a, b, c = Disk(10, 10, 5), Rectangle(8, 8, 10, 20), Ring(25, 40, 2, 6)
    u = a | b | c
    assert isinstance(u, Union) and u.parts == (a, b, c)
    expected = np.maximum(np.maximum(ref_disk(10, 10, 5), ref_rect(8, 8, 10, 20)), ref_ring(25, 40, 2, 6))
    np.testing.assert_array_equal(u.rasterize(SIG), expected)


def test_union_with_a_part_off_the_detector_is_allowed():
    u = Union([Disk(10, 10, 3), Disk(500, 500, 3)])
    np.testing.assert_array_equal(u.rasterize(SIG), ref_disk(10, 10, 3))


def test_union_of_weighted_keeps_negative_weights_where_alone():
    w = np.full(SIG, -1.0, np.float32)
    np.testing.assert_array_equal(Union([Weighted(w)]).rasterize(SIG), w)
    both = Union([Weighted(w), Disk(10, 10, 3)]).rasterize(SIG)
    np.testing.assert_array_equal(both, np.maximum(w, ref_disk(10, 10, 3)))


def test_difference_is_base_where_subtract_is_zero():
    d = Disk(18, 26, 10) - Rectangle(15, 0, 4, 53)
    assert isinstance(d, Difference)
    expected = ref_disk(18, 26, 10) * (ref_rect(15, 0, 4, 53) == 0)
    np.testing.assert_array_equal(d.rasterize(SIG), expected)


def test_difference_removing_everything_is_empty_not_an_error():
    d = Disk(18, 26, 3) - Disk(18, 26, 5)
    assert not d.rasterize(SIG).any()
    assert d.is_empty(SIG)
    assert not Disk(18, 26, 3).is_empty(SIG)
    assert Disk(500, 500, 3).is_empty(SIG)


def test_difference_with_weighted_base():
    w = np.arange(SIG[0] * SIG[1], dtype=np.float32).reshape(SIG)
    d = Weighted(w) - Disk(0, 0, 10)
    np.testing.assert_array_equal(d.rasterize(SIG), w * (ref_disk(0, 0, 10) == 0))


def test_scaled():
    s = 2.5 * Disk(10, 10, 4)
    assert s == Scaled(Disk(10, 10, 4), 2.5) == Disk(10, 10, 4) * 2.5
    np.testing.assert_array_equal(s.rasterize(SIG), 2.5 * ref_disk(10, 10, 4))
    np.testing.assert_array_equal((np.float64(-1) * Disk(10, 10, 4)).rasterize(SIG), -ref_disk(10, 10, 4))


def test_symmetric_spots_six_disks_at_expected_positions():
    cy, cx, dist, r = 18.0, 26.0, 10.0, 2.0
    spots = SymmetricSpots(cy, cx, dist, r, 6)
    raster = spots.rasterize(SIG)
    labels, count = scipy.ndimage.label(raster)
    assert count == 6
    centres = scipy.ndimage.center_of_mass(raster, labels, range(1, 7))
    expected = [(cy + dist * math.sin(math.radians(60 * k)), cx + dist * math.cos(math.radians(60 * k))) for k in range(6)]
    for ey, ex in expected:
        assert min(math.hypot(y - ey, x - ex) for y, x in centres) < 0.6
    reference = np.max([ref_disk(ey, ex, r) for ey, ex in expected], axis=0)
    np.testing.assert_array_equal(raster, reference)


def test_symmetric_spots_angle_from_x_towards_y():
    first = SymmetricSpots(18, 26, 10, 1.5, 4, angle=90).disks()[0]
    assert first.cy == pytest.approx(28) and first.cx == pytest.approx(26)
    first = SymmetricSpots(18, 26, 10, 1.5, 4).disks()[0]
    assert first.cy == pytest.approx(18) and first.cx == pytest.approx(36)


def test_weighted_rasterizes_to_its_weights_as_float32():
    w = np.random.default_rng(0).normal(size=SIG)
    raster = Weighted(w).rasterize(SIG)
    assert raster.dtype == np.float32
    np.testing.assert_array_equal(raster, w.astype(np.float32))
    np.testing.assert_array_equal(Weighted(w > 0).rasterize(SIG), (w > 0).astype(np.float32))


def test_weighted_is_a_readonly_copy_and_compares_by_value():
    w = np.ones(SIG)
    mask = Weighted(w)
    w[0, 0] = 5
    assert mask.weights[0, 0] == 1
    with pytest.raises(ValueError):
        mask.weights[0, 0] = 2
    assert mask == Weighted(np.ones(SIG, np.float32))
    assert mask != Weighted(np.zeros(SIG))
    assert hash(mask) == hash(Weighted(np.ones(SIG)))
    assert "shape (37, 53)" in repr(mask)


def test_masks_are_frozen_and_hashable():
    d = Disk(1, 2, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.radius = 4
    assert {d, Disk(1.0, 2.0, 3.0)} == {d}
    assert d.kind == "disk" and isinstance(d.cy, float)


def test_bounding_box_keeps_work_small_on_large_detector():
    patch = M.rasterize_patch(Disk(2000.3, 1000.7, 5), (4096, 4096))
    assert patch.values.shape[0] <= 14 and patch.values.shape[1] <= 14
    rows, cols = patch.slices
    local = ref_disk(2000.3 - rows.start, 1000.7 - cols.start, 5, patch.values.shape)
    np.testing.assert_array_equal(patch.values, local)


# --- JSON


EVERY_KIND = [
    Disk(10.25, 20.5, 3),
    Ring(10, 20, 0, 4.5),
    Rectangle(1, 2, 3.5, 4),
    Polygon([(0, 0), (0, 10.5), (7.25, 5)]),
    Point(3.5, 4),
    SymmetricSpots(18, 26, 10, 2, 6, angle=15),
    Union([Disk(1, 2, 3), Ring(4, 5, 1, 2)]),
    Difference(Disk(1, 2, 3), Point(1, 2)),
    Scaled(Disk(1, 2, 3), -0.5),
    Weighted(np.random.default_rng(1).normal(size=(5, 7))),
    Union([Difference(Weighted(np.eye(4)), Scaled(Point(1, 1), 2)), Polygon([(0, 0), (3, 0), (0, 3)])]),
]


@pytest.mark.parametrize("mask", EVERY_KIND, ids=lambda m: m.kind)
def test_json_round_trip(mask):
    d = mask.to_dict()
    assert d["kind"] == mask.kind
    text = json.dumps(d)
    again = from_dict(json.loads(text))
    assert again == mask and type(again) is type(mask)
    assert mask_from_json(mask_to_json(mask)) == mask


def test_every_kind_is_in_schema_and_registry():
    schema = M.load_schema()
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema)
    in_schema = {schema["$defs"][b["$ref"].rsplit("/", 1)[-1]]["properties"]["kind"]["const"]
                 for b in schema["$defs"]["mask"]["oneOf"]}
    assert in_schema == set(M.KINDS) == {m.kind for m in EVERY_KIND}


def test_weighted_json_layout():
    d = Weighted(np.array([[1, 2], [3, 4]])).to_dict()["weights"]
    assert d["shape"] == [2, 2] and d["dtype"] == "float32"
    import base64

    assert base64.b64decode(d["data_b64"]) == np.array([1, 2, 3, 4], "<f4").tobytes()


def test_to_dict_floats_are_python_floats():
    d = Disk(np.float32(1.5), np.int64(2), 3).to_dict()
    assert d == {"kind": "disk", "cy": 1.5, "cx": 2.0, "radius": 3.0}
    assert all(type(d[k]) is float for k in ("cy", "cx", "radius"))


def test_symmetric_spots_angle_is_optional_in_json():
    d = {"kind": "symmetric_spots", "cy": 1, "cx": 2, "distance": 3, "radius": 1, "n": 4}
    assert from_dict(d) == SymmetricSpots(1, 2, 3, 1, 4)


@pytest.mark.parametrize(
    "d,phrases",
    [
        ({"kind": "hexagon", "cy": 1}, ["unknown mask kind 'hexagon'", "disk", "ring", "weighted"]),
        ({"cy": 1, "cx": 2, "radius": 3}, ["no 'kind'"]),
        ({"kind": "disk", "cy": 1, "cx": 2}, ["'radius' is a required property", "$"]),
        ({"kind": "disk", "cy": 1, "cx": 2, "radius": 3, "colour": "red"}, ["colour", "unexpected"]),
        ({"kind": "disk", "cy": "1", "cx": 2, "radius": 3}, ["$.cy", "not of type 'number'"]),
        ({"kind": "disk", "cy": 1, "cx": 2, "radius": -3}, ["$.radius"]),
        ({"kind": "union", "parts": [{"kind": "disk", "cy": 1, "cx": 2, "radius": True}]}, ["$.parts[0].radius"]),
        ({"kind": "union", "parts": []}, ["$.parts"]),
        ({"kind": "difference", "base": {"kind": "point", "y": 1, "x": 1}, "subtract": {"kind": "nope"}},
         ["$.subtract", "unknown mask kind 'nope'"]),
        ({"kind": "polygon", "vertices": [[0, 0], [1, 1]]}, ["$.vertices"]),
        ({"kind": "weighted", "weights": {"shape": [2, 2], "dtype": "float64", "data_b64": ""}},
         ["$.weights.dtype"]),
        ([1, 2], ["must be an object"]),
    ],
)
def test_schema_errors_raise_mask_error_with_json_path(d, phrases):
    assert_raises_mask_error(lambda: validate_mask_dict(d), *phrases)
    assert_raises_mask_error(lambda: from_dict(d), *phrases)


def test_from_dict_applies_class_checks():
    assert_raises_mask_error(
        lambda: from_dict({"kind": "ring", "cy": 1, "cx": 1, "r_inner": 5, "r_outer": 2}), "r_inner", "smaller"
    )
    assert_raises_mask_error(lambda: from_dict({"kind": "disk", "cy": float("nan"), "cx": 1, "radius": 2}), "cy")
    bad = {"kind": "weighted", "weights": {"shape": [2, 2], "dtype": "float32", "data_b64": "AAAA"}}
    assert_raises_mask_error(lambda: from_dict(bad), "bytes", "shape (2, 2)")


def test_mask_from_json_bad_text():
    assert_raises_mask_error(lambda: mask_from_json("{not json"), "could not be parsed")


# --- bad input


@pytest.mark.parametrize(
    "make,phrases",
    [
        (lambda: Disk(1, 2, float("nan")), ["Disk radius", "positive finite", "nan", "radius > 0"]),
        (lambda: Disk(1, 2, -1), ["Disk radius", "radius > 0"]),
        (lambda: Disk(1, 2, 0), ["Disk radius"]),
        (lambda: Disk(float("inf"), 2, 1), ["Disk cy", "finite", "inf"]),
        (lambda: Disk(1, "2", 1), ["Disk cx", "'2'"]),
        (lambda: Disk(1, True, 1), ["Disk cx"]),
        (lambda: Ring(1, 2, 3, 3), ["r_inner must be smaller than r_outer"]),
        (lambda: Ring(1, 2, 4, 3), ["r_inner must be smaller than r_outer"]),
        (lambda: Ring(1, 2, -1, 3), ["Ring r_inner", "non-negative"]),
        (lambda: Rectangle(0, 0, 0, 5), ["Rectangle height", "height > 0"]),
        (lambda: Rectangle(0, 0, 5, -1), ["Rectangle width"]),
        (lambda: Polygon([(0, 0), (1, 1)]), ["at least 3 distinct vertices"]),
        (lambda: Polygon([(0, 0), (1, 1), (0, 0)]), ["at least 3 distinct vertices"]),
        (lambda: Polygon([(0, 0), (1, 1), (2, 2)]), ["collinear"]),
        (lambda: Polygon([(0, 0), (1, 1, 2), (2, 0)]), ["(y, x) pairs"]),
        (lambda: Polygon([(0, 0), (1, float("nan")), (2, 0)]), ["vertices[1] x"]),
        (lambda: Point(float("nan"), 0), ["Point y"]),
        (lambda: SymmetricSpots(1, 1, 5, 1, 0), ["n must be a positive integer"]),
        (lambda: SymmetricSpots(1, 1, 5, 1, 2.5), ["n must be a positive integer"]),
        (lambda: SymmetricSpots(1, 1, -5, 1, 2), ["distance"]),
        (lambda: Union([]), ["at least one part"]),
        (lambda: Union([Disk(1, 1, 1), "disk"]), ["parts[1]", "must be a mask"]),
        (lambda: Difference(Disk(1, 1, 1), None), ["subtract"]),
        (lambda: Scaled(Disk(1, 1, 1), float("nan")), ["Scaled factor"]),
        (lambda: Weighted(np.ones(5)), ["2-D"]),
        (lambda: Weighted(np.full((3, 3), np.nan)), ["non-finite"]),
        (lambda: Weighted(np.full((3, 3), 1e300)), ["non-finite"]),
        (lambda: Weighted(np.ones((3, 3), complex)), ["real numeric"]),
    ],
)
def test_invalid_masks_raise_mask_error(make, phrases):
    assert_raises_mask_error(make, *phrases)


def test_mask_error_is_a_value_error():
    with pytest.raises(ValueError):
        Disk(0, 0, -1)


@pytest.mark.parametrize(
    "mask",
    [Disk(100, 100, 3), Disk(-10, 26, 5), Rectangle(37, 0, 5, 5), Point(-0.6, 3), Ring(18, 200, 1, 4),
     Union([Disk(500, 0, 2), Disk(0, 500, 2)]), Polygon([(40, 0), (40, 10), (50, 5)]),
     Disk(50, 60, 8) - Disk(18, 26, 3)],
)
def test_mask_outside_detector_raises(mask):
    assert_raises_mask_error(lambda: mask.rasterize(SIG), "lies outside the detector of shape (37, 53)")
    assert_raises_mask_error(lambda: stack_masks([Disk(1, 1, 2), mask], SIG), "masks[1]", "outside")


def test_shape_between_pixel_centres_raises():
    assert_raises_mask_error(lambda: Disk(10.5, 10.5, 0.3).rasterize(SIG), "covers no pixel centre", "Point")


def test_weighted_of_wrong_shape_names_both_shapes():
    assert_raises_mask_error(lambda: Weighted(np.ones((3, 4))).rasterize(SIG), "(3, 4)", "(37, 53)")


@pytest.mark.parametrize("sig_shape", [(0, 5), (5,), (5, 5, 5), (5.0, 5), (-1, 3), "ab", None, (True, 4)])
def test_invalid_sig_shape(sig_shape):
    assert_raises_mask_error(lambda: Disk(1, 1, 1).rasterize(sig_shape), "sig_shape must be two positive integers")


def test_numpy_sig_shape_is_accepted():
    assert Disk(1, 1, 1).rasterize(np.array([5, 6])).shape == (5, 6)


# --- stacks


def test_stack_dense_and_sparse_agree_and_keep_column_order():
    mask_list = [Disk(18, 26, 7), Ring(10.5, 20.3, 2, 5), Point(3, 7), Weighted(np.linspace(-1, 1, 37 * 53).reshape(SIG)),
                 Disk(18, 26, 3) - Disk(18, 26, 5)]
    stack = stack_masks(mask_list, SIG, names=["bf", "adf", "px", "w", "empty"])
    assert isinstance(stack.sparse, scipy.sparse.csr_matrix)
    assert stack.sparse.dtype == np.float32 and stack.dense.dtype == np.float32
    assert stack.sparse.shape == stack.dense.shape == (37 * 53, 5)
    np.testing.assert_array_equal(stack.sparse.toarray(), stack.dense)
    for i, mask in enumerate(mask_list):
        np.testing.assert_array_equal(stack.dense[:, i], mask.rasterize(SIG).ravel())
    assert stack.n_masks == 5 and stack.sig_shape == SIG and stack.names == ("bf", "adf", "px", "w", "empty")
    assert stack.nnz == np.count_nonzero(stack.dense)
    assert stack.density == pytest.approx(stack.nnz / (37 * 53 * 5))


def test_stack_pixel_major_flattening():
    stack = stack_masks([Point(11, 29)], SIG)
    rows = stack.sparse.tocoo().row
    assert list(rows) == [11 * 53 + 29]


def test_stack_from_mapping_takes_names():
    stack = stack_masks({"bf": Disk(5, 5, 2), "px": Point(1, 1)}, SIG)
    assert stack.names == ("bf", "px") and stack.names is not None


def test_stack_gemm_identity():
    frames = np.random.default_rng(2).random((4, 37 * 53)).astype(np.float32)
    stack = stack_masks([Disk(18, 26, 7), Ring(18, 26, 7, 15)], SIG)
    np.testing.assert_allclose(frames @ stack.dense, (stack.sparse.T @ frames.T).T, rtol=1e-5)


def test_stack_large_detector_small_disk():
    stack = stack_masks([Disk(2000.5, 1000.25, 6), Point(4095, 4095)], (4096, 4096))
    local = ref_disk(6.5, 6.25, 6, (14, 14))  # same disk, shifted by (1994, 994)
    assert stack.nnz == int(local.sum()) + 1
    rows = stack.sparse[:, 1].tocoo().row
    assert list(rows) == [4096 * 4096 - 1]
    data = pickle.dumps(stack)
    assert len(data) < 4096
    again = pickle.loads(data)
    assert again.sig_shape == (4096, 4096) and again.nnz == stack.nnz
    assert (again.sparse != stack.sparse).nnz == 0


def test_stack_pickle_drops_dense_and_rebuilds_it():
    stack = stack_masks([Disk(18, 26, 7), Point(3, 3)], SIG, names=["a", "b"])
    dense = stack.dense
    again = pickle.loads(pickle.dumps(stack))
    assert again._dense is None
    np.testing.assert_array_equal(again.dense, dense)
    assert again.names == ("a", "b")


def test_stack_bad_input():
    assert_raises_mask_error(lambda: stack_masks([], SIG), "at least one mask")
    assert_raises_mask_error(lambda: stack_masks(Disk(1, 1, 1).to_dict(), SIG), "from_dict")
    assert_raises_mask_error(lambda: stack_masks(Disk(1, 1, 1), SIG), "wrap it in a list")
    assert_raises_mask_error(lambda: stack_masks([Disk(1, 1, 1)], SIG, names=["a", "b"]), "one name per mask")
    assert_raises_mask_error(lambda: stack_masks([Disk(1, 1, 1), {"kind": "disk"}], SIG), "masks[1]", "not a mask")
    assert_raises_mask_error(lambda: stack_masks([Disk(1, 1, 1)], (0, 1)), "sig_shape")
    assert_raises_mask_error(lambda: MaskStack(scipy.sparse.csr_matrix((10, 1)), SIG), "needs shape")

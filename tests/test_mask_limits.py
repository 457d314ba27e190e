"""Hostile mask descriptions: magnitudes float32 cannot hold, absurd counts, deep
nesting, malformed JSON. Each must end in a MaskError that names the parameter, the
allowed range and the fix, quickly, never a raw exception, a hang or a giant
allocation; a fuzzer checks that nothing else comes out of ``from_dict``."""

import copy
import json
import math
import random
import subprocess
import sys
import time

import numpy as np
import pytest

from stem_explorer import masks as M
from stem_explorer.errors import MaskError
from stem_explorer.masks import limits

SIG = (64, 48)


def raises(fn, *phrases):
    with pytest.raises(MaskError) as info:
        fn()
    for phrase in phrases:
        assert phrase in str(info.value), str(info.value)
    return str(info.value)


def disk(**change):
    return {"kind": "disk", "cy": 8, "cx": 8, "radius": 5, **change}


# --- 20.5: magnitudes


@pytest.mark.parametrize("factor", [1e39, -1e39, 1e21, 3.5e38])
def test_scaled_factor_beyond_float32_is_refused(factor):
    """1e39 is finite in float64 but inf in float32: every virtual image became NaN."""
    raises(lambda: M.Scaled(M.Disk(8, 8, 5), factor), "Scaled factor", "1e+20")
    raises(lambda: M.from_dict({"kind": "scaled", "mask": disk(), "factor": factor}), "factor", "1e+20")


def test_scaled_factor_that_vanishes_in_float32_is_refused():
    raises(lambda: M.Scaled(M.Disk(8, 8, 5), 1e-45), "Scaled factor", "1e-20", "or 0")
    assert M.Scaled(M.Disk(8, 8, 5), 0).factor == 0.0  # an explicit zero stays allowed


def test_nested_factors_are_bounded_by_their_product():
    inner = M.Scaled(M.Disk(8, 8, 5), 1e15)
    raises(lambda: M.Scaled(inner, 1e15), "magnitude 1e+30", "1e+20")
    raises(lambda: M.Scaled(M.Weighted(np.full((4, 4), 1e10, np.float32)), 1e15), "magnitude 1e+25")
    ok = M.Scaled(M.Scaled(M.Disk(8, 8, 5), 1e10), 1e-5)
    np.testing.assert_allclose(ok.rasterize(SIG).max(), 1e5, rtol=1e-6)


def test_weighted_weights_beyond_the_bound_are_refused():
    raises(lambda: M.Weighted(np.full((4, 4), 1e30, np.float32)), "Weighted weights", "1e+30", "1e+20", "rescale")


@pytest.mark.parametrize(
    "make,name",
    [
        (lambda v: M.Disk(8, 8, v), "Disk radius"),
        (lambda v: M.Disk(v, 8, 5), "Disk cy"),
        (lambda v: M.Ring(8, 8, 1, v), "Ring r_outer"),
        (lambda v: M.Rectangle(0, 0, v, 4), "Rectangle height"),
        (lambda v: M.Polygon([(0, 0), (0, v), (5, 5)]), "Polygon vertices[1] x"),
        (lambda v: M.Point(v, 0), "Point y"),
        (lambda v: M.SymmetricSpots(8, 8, v, 2, 4), "SymmetricSpots distance"),
    ],
)
@pytest.mark.parametrize("value", [1e155, 1e300, 10**400, 2e6])
def test_huge_coordinates_and_sizes_are_refused(make, name, value):
    """A radius of 1e155 raised a raw OverflowError when squared."""
    message = raises(lambda: make(value), name, "1e+06")
    assert len(message) < 400


@pytest.mark.parametrize(
    "d,phrase",
    [
        (disk(radius=1e155), "$.radius"),
        (disk(cx=-1e300), "$.cx"),
        ({"kind": "ring", "cy": 1, "cx": 1, "r_inner": 0, "r_outer": 1e200}, "$.r_outer"),
        ({"kind": "polygon", "vertices": [[0, 0], [0, 1e200], [5, 5]]}, "$.vertices[1][1]"),
    ],
)
def test_huge_numbers_in_json_are_refused_with_their_path(d, phrase):
    raises(lambda: M.from_dict(d), phrase, "1000000")


def test_masks_within_the_bounds_still_work():
    big = M.Disk(-1e6 + 10, 0, 1e6)  # at the bounds: clipped to the detector
    assert big.rasterize(SIG).sum() > 0
    assert M.from_dict(M.Scaled(M.Disk(8, 8, 5), -1e20).to_dict()).factor == -1e20


def test_schema_states_the_same_bounds_as_the_classes():
    defs = M.load_schema()["$defs"]
    assert defs["disk"]["properties"]["radius"]["maximum"] == limits.MAX_EXTENT
    assert defs["disk"]["properties"]["cy"]["minimum"] == -limits.MAX_EXTENT
    assert defs["scaled"]["properties"]["factor"]["maximum"] == limits.MAX_WEIGHT
    assert defs["symmetric_spots"]["properties"]["n"]["maximum"] == limits.MAX_SHAPES
    assert defs["union"]["properties"]["parts"]["maxItems"] == limits.MAX_SHAPES
    assert defs["polygon"]["properties"]["vertices"]["maxItems"] == limits.MAX_VERTICES
    for kind, branch in defs.items():
        for name, spec in branch.get("properties", {}).items():
            if spec.get("type") == "number":
                assert "maximum" in spec, (kind, name)


# --- 20.9: counts, cost and nesting


SPOTS = {"kind": "symmetric_spots", "cy": 32, "cx": 24, "distance": 10, "radius": 3, "n": 1_000_000_000}


def test_a_billion_spots_are_refused_at_once():
    """100 bytes of JSON built 1e9 disks: minutes, then MemoryError."""
    t0 = time.perf_counter()
    raises(lambda: M.from_dict(SPOTS), "$.n", "4096")
    raises(lambda: M.SymmetricSpots(32, 24, 10, 3, 10**9), "SymmetricSpots n", "at most 4096")
    raises(lambda: M.SymmetricSpots(32, 24, 10, 3, 1e300), "SymmetricSpots n")
    assert time.perf_counter() - t0 < 2


def test_too_many_shapes_in_nested_unions_are_refused():
    spots = M.SymmetricSpots(32, 24, 10, 1, 4000)
    raises(lambda: M.Union([spots, spots]), "Union holds 8000 shapes", "4096")
    raises(lambda: M.Union([M.Disk(1, 1, 1)] * 5000), "5000 shapes")
    raises(lambda: spots - M.SymmetricSpots(1, 1, 1, 1, 200), "Difference holds 4200 shapes")


def test_polygon_with_too_many_vertices_is_refused():
    t = np.linspace(0, 2 * np.pi, 5000, endpoint=False)
    raises(lambda: M.Polygon(list(zip(30 + 20 * np.sin(t), 24 + 20 * np.cos(t)))), "5000 vertices", "4096")


def test_rasterising_beyond_the_cost_budget_is_refused_before_any_work():
    sig = (4096, 4096)
    t = np.linspace(0, 2 * np.pi, 4000, endpoint=False)
    polygon = M.Polygon(list(zip(2048 + 2000 * np.sin(t), 2048 + 2000 * np.cos(t))))
    whole = M.Disk(2048, 2048, 3000)
    t0 = time.perf_counter()
    raises(lambda: polygon.rasterize(sig), "pixel tests", "fewer vertices")
    raises(lambda: polygon.is_empty(sig), "pixel tests")
    raises(lambda: M.stack_masks([whole] * 200, sig), "200 masks", "pixel tests")
    raises(lambda: M.SymmetricSpots(2048, 2048, 10, 3000, 4000).rasterize(sig), "pixel tests")
    assert time.perf_counter() - t0 < 2
    assert M.pixel_tests(whole, sig) == 4096 * 4096
    assert M.pixel_tests(M.Disk(10, 10, 2), sig) == 7 * 7  # window padded by a pixel


def _nested_union(depth):
    d = disk()
    for _ in range(depth):
        d = {"kind": "union", "parts": [d]}
    return d


@pytest.mark.parametrize("depth", [33, 500, 100_000])
def test_deeply_nested_unions_are_a_mask_error(depth):
    """Deep JSON raised RecursionError from the schema validator (or json itself)."""
    d = _nested_union(depth)
    raises(lambda: M.from_dict(d), "32", "flatten")
    text = '{"kind": "union", "parts": [' * depth + json.dumps(disk()) + "]}" * depth
    raises(lambda: M.mask_from_json(text))


def test_nesting_at_the_limit_round_trips():
    mask = M.from_dict(_nested_union(31))
    assert M.from_dict(mask.to_dict()) == mask


def test_deep_nesting_built_in_python_is_refused():
    mask = M.Disk(8, 8, 5)
    with pytest.raises(MaskError, match="nests masks 33 levels deep"):
        for _ in range(100):
            mask = M.Scaled(mask, 1.0)


def test_deep_plain_lists_are_a_mask_error():
    deep = {"kind": "polygon", "vertices": [[[[[[[[[[[[0]]]]]]]]]]]] * 3}
    raises(lambda: M.from_dict(deep), "$.vertices")
    nested = []
    for _ in range(5000):
        nested = [nested]
    raises(lambda: M.from_dict({"kind": "polygon", "vertices": nested}), "containers deep")


@pytest.mark.parametrize("kind", [["disk"], {"a": 1}, 5, None, 1.5])
def test_kind_of_the_wrong_type_is_a_mask_error(kind):
    """A list as kind raised TypeError: unhashable type: 'list'."""
    raises(lambda: M.from_dict({"kind": kind, "cy": 1, "cx": 1, "radius": 1}), "unknown mask kind")


def test_cli_refuses_a_billion_spots_quickly(tmp_path):
    """The command line hung on the 100-byte description."""
    data = tmp_path / "d.npy"
    np.save(data, np.zeros((2, 2, 64, 48), np.uint16))
    t0 = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "stem_explorer", "run", str(data), "-a", "vd", "--mask-json", json.dumps(SPOTS)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert "4096" in run.stderr and "Traceback" not in run.stderr
    assert time.perf_counter() - t0 < 60


def test_cli_refuses_deep_and_long_mask_json(tmp_path, capsys):
    """json.loads raised RecursionError, and Path.is_file OSError on JSON text longer
    than a file name may be."""
    from stem_explorer.cli import main

    data = tmp_path / "d.npy"
    np.save(data, np.zeros((2, 2, 64, 48), np.uint16))
    deep = '{"kind": "union", "parts": [' * 100_000 + json.dumps(disk()) + "]}" * 100_000
    assert main(["run", str(data), "-a", "vd", "--mask-json", deep]) == 2
    assert "--mask-json" in capsys.readouterr().err
    many = json.dumps({"kind": "union", "parts": [disk()] * 5000})
    assert main(["run", str(data), "-a", "vd", "--mask-json", many]) == 2
    assert "$.parts" in capsys.readouterr().err


# --- the fuzzer: random and mutated descriptions give a mask or a MaskError


def _seeds():
    w = M.Weighted(np.arange(12, dtype=np.float32).reshape(3, 4)).to_dict()
    return [
        disk(), {"kind": "ring", "cy": 4, "cx": 5, "r_inner": 1, "r_outer": 3},
        {"kind": "rectangle", "y0": 1, "x0": 2, "height": 3, "width": 4},
        {"kind": "polygon", "vertices": [[0, 0], [0, 5], [5, 2]]}, {"kind": "point", "y": 1, "x": 2},
        {"kind": "symmetric_spots", "cy": 9, "cx": 9, "distance": 4, "radius": 1, "n": 6, "angle": 10},
        {"kind": "union", "parts": [disk(), {"kind": "point", "y": 1, "x": 2}]},
        {"kind": "difference", "base": disk(), "subtract": disk(radius=2)},
        {"kind": "scaled", "mask": disk(), "factor": 2.5}, w,
    ]


_ODD = [None, True, -1, 0, 1, 2**63, 10**400, -1e308, 1e-320, 1e39, float("nan"), float("inf"), "", "disk",
        "A" * 10_000, [], [1, 2], {}, {"kind": "disk"}, [[0, 0]] * 5000, 1_000_000_000, "AAAA", "!!"]


def _mutate(rng, value, depth=0):
    """A random edit of a JSON value: a field replaced, removed, added or recursed into."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        value = dict(value)
        action = rng.random()
        if action < 0.35:
            value[key] = rng.choice(_ODD + _seeds())
        elif action < 0.5:
            del value[key]
        elif action < 0.6:
            value[rng.choice(["extra", "kind", "parts", "n"])] = rng.choice(_ODD)
        else:
            value[key] = _mutate(rng, value[key], depth + 1)
        return value
    if isinstance(value, list) and value and rng.random() < 0.8:
        value = list(value)
        i = rng.randrange(len(value))
        value[i] = _mutate(rng, value[i], depth + 1) if rng.random() < 0.6 else rng.choice(_ODD)
        if rng.random() < 0.2 and len(value) < 50:
            value = value * rng.choice([2, 100, 5000])
        return value
    if isinstance(value, float) and rng.random() < 0.5:
        return value * rng.choice([-1, 1e10, 1e200, 0.5, 1e-300])
    if rng.random() < 0.1:
        return {"kind": "union", "parts": [value] * rng.choice([1, 2, 3])}
    return rng.choice(_ODD + _seeds())


def test_fuzzed_descriptions_give_a_mask_or_a_mask_error():
    rng = random.Random(20)
    deadline = time.monotonic() + 20
    tried = built = 0
    while time.monotonic() < deadline and tried < 3000:
        d = rng.choice(_seeds())
        for _ in range(rng.randint(1, 4)):
            d = _mutate(rng, copy.deepcopy(d))
        t0 = time.perf_counter()
        try:
            mask = M.from_dict(d)
        except MaskError as exc:
            assert str(exc) and len(str(exc)) < 2000
        else:
            built += 1
            try:
                mask.is_empty(SIG)
                M.from_dict(json.loads(M.mask_to_json(mask)))
            except MaskError:
                pass
        # linear in the input (a few thousand items at most here): seconds on a loaded
        # machine, where the unbounded descriptions took minutes
        assert time.perf_counter() - t0 < 15, d
        tried += 1
    assert tried >= 200 and built > 10, (tried, built)

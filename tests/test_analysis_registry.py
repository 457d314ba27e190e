"""The registry of analyses: names, JSON round trips, schemas, validation, recipes and
rebuilding the analyses of a results file."""

import json

import jsonschema
import numpy as np
import pytest

from stem_explorer import analyses as an
from stem_explorer import masks
from stem_explorer.errors import AnalysisError, MaskError
from stem_explorer.io import open_dataset

#: Instances of the built-in analyses with non-default parameters; every registered
#: analysis is also tested with its declared example (Analysis.example()).
EXAMPLES = {
    "VirtualDetector": an.VirtualDetector(
        {"bf": masks.Disk(4, 4, 2), "ramp": masks.Weighted(np.linspace(0, 1, 64).reshape(8, 8))}, name="bright"
    ),
    "CenterOfMass": an.CenterOfMass(center=(3.5, 4.0), radius=3.0, scan_rotation=-12.5, flip_y=True),
    "RadialProfile": an.RadialProfile(center=(4, 4), edges=[0, 1.5, 3, 5]),
    "FEM": an.FEM(masks.Ring(4, 4, 1, 3)),
    "SumFrame": an.SumFrame(),
    "MeanFrame": an.MeanFrame(),
    "StdFrame": an.StdFrame(),
    "MaxFrame": an.MaxFrame(),
    "PickFrame": an.PickFrame([(0, 1), (2, 3)]),
    "RoiSum": an.RoiSum(masks.Rectangle(0, 1, 2, 2)),
}


def test_the_builtins_are_registered():
    assert set(EXAMPLES) <= set(an.available())


def every_example():
    return [EXAMPLES[n] for n in sorted(EXAMPLES)] + [an.get(n).example() for n in an.available()]


@pytest.mark.parametrize("analysis", every_example(), ids=repr)
def test_descriptions_round_trip_through_json_and_match_the_schema(analysis):
    name = type(analysis).__name__
    description = json.loads(json.dumps(analysis.to_dict()))
    jsonschema.Draft202012Validator(type(analysis).schema()).validate(description)
    rebuilt = an.from_dict(description)
    assert rebuilt == analysis and type(rebuilt) is type(analysis)
    assert rebuilt.to_dict() == analysis.to_dict()
    assert an.get(name) is type(analysis) and an.get(type(analysis).label) is type(analysis)


def test_a_boolean_scan_roi_round_trips():
    roi = np.zeros((3, 4), bool)
    roi[1, 2:] = True
    analysis = an.RoiSum(roi)
    assert an.from_dict(json.loads(json.dumps(analysis.to_dict()))) == analysis


def test_a_label_is_accepted_for_the_name():
    assert an.from_dict({"analysis": "com", "radius": 4}) == an.CenterOfMass(radius=4.0)


#: Values tried against every parameter: the JSON Schema and the parameter's own check
#: must agree on each (one declaration, the same verdict from the API and from JSON).
PROBES = [
    -1, 0, 0.5, 3, 400, 5000, True, "x", "ok_name", None, [], [1, 2], [1.5, 2.5], [1, 2, 3], [[1, 2], [3, 4]],
    [[1, 2], [3]], [[True, False], [False, True]], {"kind": "disk", "cy": 1, "cx": 2, "radius": 3},
    [{"kind": "disk", "cy": 1, "cx": 2, "radius": 3}], {"a": {"kind": "disk", "cy": 1, "cx": 2, "radius": 3}},
    {"kind": "disk", "cy": 1}, {}, "bad name!",
]


@pytest.mark.parametrize("name", an.available())
def test_the_schema_and_the_python_checks_agree(name):
    cls = an.get(name)
    validator = jsonschema.Draft202012Validator(cls.schema())
    base = cls.example().to_dict()
    for param in cls.parameters():
        for value in PROBES:
            by_schema = validator.is_valid(dict(base, **{param.name: value}))
            try:
                param.check(value)
                by_check = True
            except (AnalysisError, MaskError):
                by_check = False
            assert by_schema == by_check, (name, param.name, value, by_schema)


def test_parameters_are_checked_whenever_they_are_set():
    com = an.CenterOfMass()
    with pytest.raises(AnalysisError, match=r"CenterOfMass radius must be a positive finite number in px, or None, got -1"):
        com.radius = -1
    with pytest.raises(AnalysisError, match=r"scan_rotation must be a finite number from -360 to 360 in degrees, got 400"):
        an.CenterOfMass(scan_rotation=400)
    with pytest.raises(AnalysisError, match=r"n_bins must be an integer from 1 to 4096, or None, got 2.5"):
        an.RadialProfile(n_bins=2.5)
    with pytest.raises(AnalysisError, match=r"has no parameter 'radus'; its parameters: center, radius, scan_rotation, flip_y"):
        an.CenterOfMass(radus=3)
    with pytest.raises(AnalysisError, match=r"FEM needs ring: a detector mask"):
        an.FEM()
    assert com.radius is None


@pytest.mark.parametrize(
    "description, error, phrases",
    [
        ({"analysis": "Nope"}, AnalysisError, ["/analysis: unknown analysis 'Nope'; available: CenterOfMass (com), FEM (fem)"]),
        ({"radius": 3}, AnalysisError, ["needs \"analysis\""]),
        ({"analysis": "CenterOfMass", "radius": -2}, AnalysisError, ["/radius: CenterOfMass radius must be a positive finite number in px"]),
        ({"analysis": "CenterOfMass", "radius": "far"}, AnalysisError, ["/radius:", "got 'far'"]),
        ({"analysis": "CenterOfMass", "radius": float("nan")}, AnalysisError, ["/radius:", "got nan"]),
        ({"analysis": "SumFrame", "x": 1}, AnalysisError, ["/: SumFrame has no parameter 'x'"]),
        ({"analysis": "FEM"}, AnalysisError, ["/: FEM needs ring"]),
        ({"analysis": "FEM", "ring": {"kind": "ring", "cy": 1}}, MaskError, ["/ring:", "'cx' is a required property", "a 'ring' mask has fields"]),
        ({"analysis": "PickFrame", "positions": [[1, 2], [True]]}, AnalysisError, ["/positions:", "one integer index per scan axis"]),
        ([1, 2], AnalysisError, ["must be a JSON object"]),
    ],
)
def test_bad_descriptions_are_clear_errors(description, error, phrases):
    with pytest.raises(error) as caught:
        an.from_dict(description)
    for phrase in phrases:
        assert phrase in str(caught.value)


def write(path, text):
    path.write_text(text)
    return path


def test_recipes_load_and_report_the_file_and_the_json_pointer(tmp_path):
    good = [EXAMPLES["CenterOfMass"].to_dict(), {"analysis": "sum"}]
    assert an.load_recipe(write(tmp_path / "good.json", json.dumps(good))) == [EXAMPLES["CenterOfMass"], an.SumFrame()]
    assert an.load_recipe(write(tmp_path / "one.json", '{"analysis": "MaxFrame"}')) == [an.MaxFrame()]
    cases = [
        ("broken.json", '[{"analysis": "SumFrame"},\n {"analysis": ', "broken.json: not valid JSON (Expecting value: line 2 column"),
        ("nan.json", '[{"analysis": "CenterOfMass", "radius": NaN}]', "nan.json: not valid JSON (NaN is not a JSON number"),
        ("schema.json", '[{"analysis": "SumFrame"}, {"analysis": "CenterOfMass", "scan_rotation": "left"}]',
         "schema.json: /1/scan_rotation: CenterOfMass scan_rotation must be a finite number from -360 to 360 in degrees, got 'left'"),
        ("unknown.json", '[{"analysis": "Ptychography"}]', "unknown.json: /0/analysis: unknown analysis 'Ptychography'; available: "),
        ("empty.json", "[]", "empty.json: /: a recipe is a non-empty list"),
    ]
    for name, text, phrase in cases:
        with pytest.raises(AnalysisError) as caught:
            an.load_recipe(write(tmp_path / name, text))
        assert phrase in str(caught.value), str(caught.value)
    with pytest.raises(MaskError, match=r"mask.json: /0/ring: FEM ring: invalid ring description"):
        an.load_recipe(write(tmp_path / "mask.json", '[{"analysis": "FEM", "ring": {"kind": "ring", "cy": 1}}]'))
    with pytest.raises(AnalysisError, match="cannot read the recipe"):
        an.load_recipe(tmp_path / "missing.json")


def test_results_rebuild_the_analyses_that_made_them_and_recompute_on_another_file(tmp_path):
    from stem_explorer.engine import run_local

    def run(data, analyses):
        path = tmp_path / f"data{len(list(tmp_path.iterdir()))}.npy"
        np.save(path, data)
        ds = open_dataset(path)
        plan, finalize = an.build_plan(analyses, ds)
        return finalize(run_local(ds.partitions(2), plan), np.ones(ds.n_frames, bool))

    rng = np.random.default_rng(3)
    first, second = (rng.integers(0, 1000, (3, 4, 8, 8)).astype(np.uint16) for _ in range(2))
    made = [EXAMPLES["VirtualDetector"], EXAMPLES["CenterOfMass"], EXAMPLES["RadialProfile"], an.VirtualDetector(masks.Disk(4, 4, 3))]
    saved = run(first, made).save(tmp_path / "results.h5")
    rebuilt = an.from_results(saved)
    assert rebuilt == made
    again, direct = run(second, rebuilt), run(second, made)
    assert list(again) == list(direct)
    for key in direct:
        np.testing.assert_array_equal(again[key].data, direct[key].data)
    with pytest.raises(AnalysisError, match="no analyses in their provenance"):
        an.from_results(type(again)({}, {}))


def test_register_refuses_what_is_not_an_analysis():
    with pytest.raises(AnalysisError, match="is not an analysis"):
        an.register(dict)
    class Nothing(an.FrameAnalysis):
        pass

    with pytest.raises(TypeError, match="Nothing must define process_frame"):
        Nothing()

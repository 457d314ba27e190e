"""The stem-explorer command end to end: sample, info, run, formats, demo, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import _reference as ref
from _mounts import run_with_mount
from stem_explorer.cli import main
from stem_explorer.results import Results

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "sample.h5"
    assert main(["sample", str(path), "--nav-shape", "12", "10", "--sig-shape", "32", "32", "-q"]) == 0
    return path


def test_sample_and_info(sample_file, capsys):
    assert main(["info", str(sample_file), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["nav_shape"] == [12, 10] and info["sig_shape"] == [32, 32]
    assert info["format"] == "hdf5" and info["dtype"] == "<u2"
    assert info["partitions"][0]["start"] == 0
    assert main(["info", str(sample_file)]) == 0
    assert "partitions" in capsys.readouterr().out


def test_run_writes_results_with_provenance(sample_file, tmp_path, capsys):
    out = tmp_path / "out.h5"
    code = main([
        "run", str(sample_file), "-a", "vd", "--disk", "15.5", "15.5", "4", "--ring", "15.5", "15.5", "6", "14",
        "-a", "com", "--radius", "6", "-a", "sum", "-o", str(out), "--tiff", str(tmp_path / "tiff"), "--workers", "2", "-q",
    ])
    assert code == 0
    summary = capsys.readouterr().out
    assert "GB/s" in summary and "vd+com+sum" in summary and str(out) in summary
    results = Results.load(out)
    import h5py

    with h5py.File(sample_file) as f:
        data = f["/data/frames"][()]
    np.testing.assert_allclose(results["vd/mask0"].data, ref.virtual_image(data, ref.disk((32, 32), 15.5, 15.5, 4)))
    np.testing.assert_allclose(results["vd/mask1"].data, ref.virtual_image(data, ref.ring((32, 32), 15.5, 15.5, 6, 14)))
    np.testing.assert_allclose(results["sum/frame"].data, ref.frames(data).sum(axis=0))
    analyses = [a["analysis"] for a in results.provenance["analyses"]]
    assert analyses == ["VirtualDetector", "CenterOfMass", "SumFrame"]
    assert results.provenance["dataset"]["path"] == str(sample_file)
    assert (tmp_path / "tiff" / "vd_mask0.tif").exists()


def test_run_raw_with_options(tmp_path, capsys):
    data = np.arange(4 * 6 * 8 * 8, dtype=">u2").reshape(4, 6, 8, 8)
    path = tmp_path / "d.raw"
    data.tofile(path)
    out = tmp_path / "o.h5"
    code = main(["run", str(path), "--nav-shape", "4", "6", "--sig-shape", "8", "8", "--dtype", ">u2", "-a", "max", "-o", str(out), "--workers", "1", "-q"])
    assert code == 0
    np.testing.assert_array_equal(Results.load(out)["max/frame"].data, data.max(axis=(0, 1)))


@pytest.mark.parametrize(
    "argv, phrase",
    [
        (["info", "/nonexistent/file.h5"], "does not exist"),
        (["run", "{sample}", "-a", "vd"], "needs at least one mask"),
        (["run", "{sample}", "-a", "vd", "--disk", "500", "500", "3"], "outside the detector"),
        (["run", "{sample}", "-a", "vd", "--disk", "5", "5", "nan"], "radius"),
        (["run", "{sample}", "-a", "vd", "--mask-json", "{not json"], "JSON"),
        (["run", "{sample}", "-a", "nope"], "unknown analysis 'nope'; available: CenterOfMass (com), FEM (fem)"),
        (["run", "{sample}", "-a", "com", "--radius", "-1"], "CenterOfMass radius must be a positive finite number in px"),
        (["run", "{sample}", "-a", "com", "--rotation", "left"], "--scan-rotation takes a number, got 'left'"),
        (["run", "{sample}", "-a", "sum", "--radius", "3"], "--radius is a parameter of none of the chosen analyses (sum)"),
        (["run", "{sample}", "-a", "pick"], "--analysis pick needs --positions INDEX"),
        (["run", "{sample}", "-a", "fem", "--disk", "5", "5", "3", "--ring", "9", "9", "2", "5"], "FEM ring is one mask, but 2 were given (--disk, --ring)"),
        (["run", "{sample}", "--recipe", "/nonexistent/recipe.json"], "cannot read the recipe /nonexistent/recipe.json"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(sample_file, tmp_path, capsys, argv, phrase):
    out = tmp_path / "never.h5"
    argv = [a.replace("{sample}", str(sample_file)) for a in argv] + ["-o", str(out)] * (argv[0] == "run")
    assert main(argv) == 2
    assert phrase in capsys.readouterr().err
    assert not out.exists()


def test_generated_options_and_recipes_rebuild_from_the_results(sample_file, tmp_path, capsys):
    from stem_explorer import analyses as an
    from stem_explorer import masks

    recipe = tmp_path / "recipe.json"
    ring = masks.Ring(15.5, 15.5, 4, 9)
    recipe.write_text(json.dumps([{"analysis": "RadialProfile", "center": [15.5, 15.5], "n_bins": 4}, an.FEM(ring).to_dict()]))
    out = tmp_path / "out.h5"
    code = main([
        "run", str(sample_file), "--recipe", str(recipe), "-a", "com", "--center", "15", "16", "--rotation", "10",
        "--flip-y", "--radius", "8", "-a", "pick", "--position", "1", "2", "--position", "3", "4",
        "-o", str(out), "--workers", "2", "-q",
    ])
    assert code == 0, capsys.readouterr().err
    expected = [
        an.RadialProfile(center=(15.5, 15.5), n_bins=4), an.FEM(ring),
        an.CenterOfMass(center=(15, 16), radius=8, scan_rotation=10, flip_y=True), an.PickFrame([[1, 2], [3, 4]]),
    ]
    assert an.from_results(out) == expected
    import h5py

    with h5py.File(sample_file) as f:
        data = f["/data/frames"][()]
    picked = Results.load(out)["pick/frames"].data
    np.testing.assert_array_equal(picked, data[[1, 3], [2, 4]])


def test_a_recipe_that_fails_the_schema_names_the_file_and_the_pointer(sample_file, tmp_path, capsys):
    recipe = tmp_path / "recipe.json"
    recipe.write_text('[{"analysis": "SumFrame"}, {"analysis": "CenterOfMass", "radius": "wide"}]')
    assert main(["run", str(sample_file), "--recipe", str(recipe), "-o", str(tmp_path / "never.h5")]) == 2
    assert f"{recipe}: /1/radius: CenterOfMass radius must be a positive finite number in px, or None, got 'wide'" in capsys.readouterr().err
    recipe.write_text('[{"analysis": "SumFrame"}')
    assert main(["run", str(sample_file), "--recipe", str(recipe)]) == 2
    assert f"{recipe}: not valid JSON (Expecting ',' delimiter: line 1" in capsys.readouterr().err
    assert not (tmp_path / "never.h5").exists()


def test_analyses_lists_parameters_and_schemas(capsys):
    import jsonschema

    from stem_explorer import analyses as an

    assert main(["analyses", "com", "RadialProfile"]) == 0
    listing = capsys.readouterr().out
    assert "CenterOfMass (com): Shift of each pattern's centre of mass" in listing
    assert "scan_rotation: --scan-rotation NUMBER or --rotation NUMBER" in listing
    assert "A finite number from -360 to 360 in degrees; default 0.0." in listing
    assert "n_bins: --n-bins INTEGER or --bins INTEGER" in listing and "FEM" not in listing
    assert main(["analyses", "--json"]) == 0
    schemas = json.loads(capsys.readouterr().out)
    assert set(schemas) == set(an.available())
    ring = {"kind": "ring", "cy": 1, "cx": 2, "r_inner": 3, "r_outer": 4}
    jsonschema.Draft202012Validator(schemas["FEM"]).validate({"analysis": "FEM", "ring": ring})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schemas["FEM"]).validate({"analysis": "FEM", "ring": dict(ring, r_outer=-4)})
    assert main(["analyses", "nope"]) == 2
    assert "unknown analysis 'nope'" in capsys.readouterr().err


def test_formats_lists_readers(capsys):
    assert main(["formats"]) == 0
    listing = capsys.readouterr().out
    for name in ("hdf5", "raw", "npy", "raw_partitions"):
        assert name in listing


def test_console_entry_point_and_demo(tmp_path):
    exe = Path(sys.executable).with_name("stem-explorer")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "stem_explorer"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    version = subprocess.run(command + ["--version"], capture_output=True, text=True, env=env, check=True)
    assert "stem_explorer" in version.stdout
    demo = subprocess.run(
        command + ["demo", "--dir", str(tmp_path), "--nav-shape", "16", "16", "--sig-shape", "64", "64", "--workers", "2"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert demo.returncode == 0, demo.stderr
    assert "GB/s" in demo.stdout and "CoM shift error" in demo.stdout
    assert (tmp_path / "demo_results.h5").exists()
    error = float(demo.stdout.split("CoM shift error vs the known beam-shift field: ")[1].split()[0])
    assert error < 0.2



@pytest.mark.parametrize("output", ["out.h5", "sub/out.h5"])
def test_output_into_a_read_only_folder_is_a_clear_error_before_computing(sample_file, tmp_path, output):
    read_only = tmp_path / "results"
    read_only.mkdir()
    target = read_only / output
    proc = run_with_mount(read_only, "--bind -o ro", [sys.executable, "-m", "stem_explorer", "run", str(sample_file), "-a", "sum", "-o", str(target)])
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and proc.stderr == (  # nothing computed, no traceback
        f"stem-explorer: error: cannot save {str(target)!r}: the folder {str(read_only)!r} is not writable "
        f"(read-only file system or permissions); choose a folder you can write to\n"
    )
    assert list(read_only.iterdir()) == []


def test_results_save_into_a_read_only_folder_is_a_clear_error(tmp_path):
    read_only = tmp_path / "results"
    read_only.mkdir()
    script = (
        "import numpy as np\n"
        "from stem_explorer.errors import SaveError\n"
        "from stem_explorer.results import ResultArray, Results\n"
        "try:\n"
        f"    Results({{'sum/frame': ResultArray('frame', np.zeros((2, 2)), ('y', 'x'))}}).save({str(read_only / 'out.h5')!r})\n"
        "except SaveError as exc:\n"
        "    print(exc)\n"
    )
    proc = run_with_mount(read_only, "--bind -o ro", [sys.executable, "-c", script])
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.startswith(f"cannot save {str(read_only / 'out.h5')!r}: Read-only file system")
    assert list(read_only.iterdir()) == []


def test_commands_keep_no_reduced_copy(monkeypatch):
    """A command runs its analyses once: no worker bins frames for previews nobody sees."""
    import argparse

    import stem_explorer.session as session_module
    from stem_explorer import cli

    given = {}
    monkeypatch.setattr(session_module, "Session", lambda dataset, **options: given.update(options))
    cli._session(argparse.Namespace(address=None, workers=None, kernel="auto", dashboard=False), "data set")
    assert given["reduced_copy_bytes"] == 0

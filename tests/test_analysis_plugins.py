"""Analysis plugins through real installed distributions: ``*.dist-info`` folders with
an ``entry_points.txt`` on ``sys.path``, as pip leaves them, found by
importlib.metadata; no mock of the entry point machinery."""

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from stem_explorer import analyses as an
from stem_explorer.sample import make_sample

PLUGIN = textwrap.dedent('''
    """A third-party analysis: the number of pixels above a threshold, per frame."""
    from stem_explorer.analyses import FrameAnalysis, Number


    class PixelsAbove(FrameAnalysis):
        """Count of pixels brighter than threshold, per frame."""

        label = "above"
        outputs = ("count",)
        threshold = Number(100.0, minimum=0, unit="counts", help="Count pixels brighter than this.")

        def process_tile(self, frames, out):
            out[:, 0] = (frames > self.threshold).sum(axis=(1, 2))
''')
#: a second package claiming the same name, and one claiming a built-in's
RIVAL = PLUGIN.replace("label = \"above\"", "label = \"rival\"") + textwrap.dedent('''

    class SumFrame(PixelsAbove):
        """Not the built-in."""

        label = "fake_sum"
''')
BROKEN = 'import stem_explorer_no_such_dependency  # the plugin needs a package that is not installed\n'


def install(site: Path, distribution: str, modules: dict, entries: dict) -> None:
    """A distribution as pip installs it: its modules and a dist-info folder."""
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)
    info = site / f"{distribution}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[{an.ENTRY_POINT_GROUP}]\n{lines}")
    (info / "RECORD").write_text("")


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """Two site folders (searched in this order): the first holds the plugin and a
    broken one, the second a rival claiming the same name and a built-in's."""
    root = tmp_path_factory.mktemp("plugins")
    first, second = root / "site_a", root / "site_b"
    install(first, "se_pixels_above", {"se_pixels_above": PLUGIN}, {"PixelsAbove": "se_pixels_above:PixelsAbove"})
    install(first, "se_broken", {"se_broken": BROKEN}, {"Broken": "se_broken:Broken"})
    install(second, "se_rival", {"se_rival": RIVAL},
            {"PixelsAbove": "se_rival:PixelsAbove", "SumFrame": "se_rival:SumFrame"})
    return [first, second]


def test_plugins_load_and_bad_ones_are_skipped_with_a_warning_naming_them(sites, monkeypatch):
    for site in reversed(sites):
        monkeypatch.syspath_prepend(str(site))
    registry = an.AnalysisRegistry()
    registry.register(an.SumFrame)  # a built-in, registered before the plugins
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = registry.names()
    messages = [str(w.message) for w in caught if issubclass(w.category, an.AnalysisPluginWarning)]
    assert names == ["PixelsAbove", "SumFrame"]
    assert registry.get("PixelsAbove").__module__ == "se_pixels_above"  # the first one wins
    assert registry.get("above") is registry.get("PixelsAbove")
    assert registry.get("SumFrame") is an.SumFrame
    assert len(messages) == 3, messages
    broken = next(m for m in messages if "se_broken" in m)
    assert "the plugin 'Broken' (se_broken:Broken, distribution se_broken) failed to load" in broken
    assert "ModuleNotFoundError" in broken and "stem_explorer_no_such_dependency" in broken
    clash = next(m for m in messages if "'PixelsAbove'" in m)
    first = "the plugin 'PixelsAbove' (se_pixels_above:PixelsAbove, distribution se_pixels_above)"
    assert first in clash and "(se_rival:PixelsAbove, distribution se_rival)" in clash
    assert f"keeping the first, {first}" in clash
    builtin = next(m for m in messages if "'SumFrame'" in m)
    assert "keeping the first, stem_explorer.analyses.frames.SumFrame" in builtin
    # a description of the plugin's analysis round-trips like a built-in's
    cls = registry.get("PixelsAbove")
    assert registry.from_dict(cls(threshold=7).to_dict()) == cls(threshold=7)


def run_cli(args, sites, **kwargs):
    paths = [str(s) for s in sites] + [str(Path(__file__).resolve().parents[1])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "stem_explorer", *args], capture_output=True, text=True,
                          env=env, timeout=300, **kwargs)


def test_the_command_line_lists_a_plugin_and_the_builtins_still_work(sites):
    listing = run_cli(["analyses"], sites)
    assert listing.returncode == 0, listing.stderr
    assert "PixelsAbove (above): Count of pixels brighter than threshold, per frame." in listing.stdout
    assert "distribution se_pixels_above" in listing.stdout
    assert "threshold: --threshold NUMBER" in listing.stdout and "in counts; default 100.0" in listing.stdout
    assert "CenterOfMass (com)" in listing.stdout and "VirtualDetector (vd)" in listing.stdout
    assert "se_broken" in listing.stderr and "failed to load" in listing.stderr


@pytest.mark.cluster
def test_a_plugin_runs_from_the_command_line_on_a_cluster(sites, tmp_path):
    data_path = make_sample(tmp_path / "s.h5", nav_shape=(6, 8), sig_shape=(24, 20))
    out = tmp_path / "out.h5"
    done = run_cli(["run", str(data_path), "-a", "above", "--threshold", "150", "-a", "sum", "-o", str(out),
                    "--workers", "2", "-q"], sites)
    assert done.returncode == 0, done.stderr
    import h5py

    from stem_explorer.results import Results

    with h5py.File(data_path) as f:
        data = f["data/frames"][()]
    results = Results.load(out)
    np.testing.assert_array_equal(results["above/count"].data, (data > 150).sum(axis=(2, 3)))
    assert results.provenance["analyses"][0] == {"analysis": "PixelsAbove", "threshold": 150.0, "label": "above"}
    bad = run_cli(["run", str(data_path), "-a", "above", "--threshold", "-3", "-o", str(tmp_path / "no.h5")], sites)
    assert bad.returncode == 2
    assert "PixelsAbove threshold must be a non-negative finite number in counts, got -3.0" in bad.stderr
    assert not (tmp_path / "no.h5").exists()

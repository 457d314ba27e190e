"""The compare view (``Explorer([...])``): many data sets, one shared mask, one cluster.

Real multi-process clusters and real files; every image is checked against numpy.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from stem_explorer.analyses import from_dict
from stem_explorer.io.listing import browse, list_datasets
from stem_explorer.io.synthetic import write_zarr
from stem_explorer.masks import Disk, rasterize
from stem_explorer.sample import make_sample
from stem_explorer.session_group import expand_sources, is_many
from stem_explorer.widgets import Explorer
from stem_explorer.widgets.compare import CompareExplorer, tile_layout
from stem_explorer.widgets.path_chooser import PathChooser

SIG = (40, 36)


def frames(path) -> np.ndarray:
    with h5py.File(path) as f:
        return f["data/frames"][()].astype(np.float64)


def virtual_image(path, mask) -> np.ndarray:
    data = frames(path)
    return np.einsum("abyx,yx->ab", data, rasterize(mask, data.shape[2:]))


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Two scans of different scan shapes on one detector, one on another detector, a damaged file."""
    folder = tmp_path_factory.mktemp("compare")
    a = make_sample(folder / "a.h5", nav_shape=(12, 20), sig_shape=SIG)
    b = make_sample(folder / "b.h5", nav_shape=(9, 7), sig_shape=SIG)
    c = make_sample(folder / "c.h5", nav_shape=(5, 6), sig_shape=(30, 36))
    bad = folder / "bad.h5"
    bad.write_bytes(b"not an HDF5 file")
    return {"a": str(a), "b": str(b), "c": str(c), "bad": str(bad), "folder": folder}


@pytest.fixture(scope="module")
def compare(scans, tmp_path_factory):
    # a folder of data sets: its files with a reader's suffix, in name order
    view = Explorer(str(scans["folder"]), n_workers=2, recipe_dir=str(tmp_path_factory.mktemp("recipes")))
    view.wait(600)
    yield view
    view.close()


def check_images(view, scans, names=("a", "b")) -> None:
    mask = view.editor.mask()
    for key in names:
        name = os.path.basename(scans[key])
        reference = virtual_image(scans[key], mask)
        np.testing.assert_allclose(view.results[name]["vd/image"].data, reference, rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(view.images()[name], reference, rtol=1e-6, err_msg=name)


@pytest.mark.cluster
def test_every_data_set_shows_its_image_of_the_shared_mask_on_one_cluster(compare, scans, monkeypatch):
    from stem_explorer.engine import reduced_copy

    monkeypatch.setattr(reduced_copy, "PREVIEW_WORTH_S", 0.0)  # these small passes take milliseconds
    assert isinstance(compare, CompareExplorer) and compare.error is None
    assert list(compare.tiles) == ["a.h5", "b.h5", "bad.h5", "c.h5"]
    (disk,) = compare.editor.shapes  # the bright-field disk of the selected data set's sum frame
    assert disk["kind"] == "disk" and compare.detector_choice.value == "a.h5"
    np.testing.assert_array_equal(compare.detector_image(), frames(scans["a"]).sum(axis=(0, 1)))
    check_images(compare, scans)
    # one client, one cluster of two workers, for all data sets
    sessions = [t.session for t in compare.tiles.values() if t.session is not None]
    assert len({id(s.client) for s in sessions}) == 1 and sessions[0].n_workers == 2
    # the damaged file: an error tile, with the file's own error
    bad = compare.tiles["bad.h5"]
    assert bad.session is None and "se-error" in bad.message.value and "FormatError" in bad.message.value
    # another detector: the shared mask cannot apply, and the tile says so
    other = compare.tiles["c.h5"]
    assert "cannot apply" in other.message.value and "30x36" in other.message.value and "40x36" in other.message.value
    assert other.results is None and other.view.image is None and other.navigation.job is None

    # a mask change previews from each data set's reduced copy (left by its sum frame), said on its tile
    messages = []
    compare.tiles["a.h5"].message.observe(lambda change: messages.append(change["new"]), "value")
    compare.editor.shapes = [{"kind": "ring", "cy": 20, "cx": 18, "r_inner": 5, "r_outer": 15, "op": "add"}]
    compare.wait(300)
    check_images(compare, scans)
    assert any("preview from the reduced copy in memory" in text for text in messages)


@pytest.mark.cluster
def test_the_newest_job_wins_on_every_tile(compare, scans):
    """Mask changes in quick succession cancel each tile's previous job; a superseded
    job's partial, delivered after the newer job started, is never drawn."""
    tiles = [compare.tiles[n] for n in ("a.h5", "b.h5")]
    originals = {id(t): t.session.run for t in tiles}
    delivered = []  # (tile, on_partial, job) of every start

    def recording(tile):
        run = originals[id(tile)]

        def run_and_record(*args, on_partial=None, **kwargs):
            job = run(*args, on_partial=on_partial, **kwargs)
            delivered.append((tile, on_partial, job))
            return job

        return run_and_record

    for tile in tiles:
        tile.session.run = recording(tile)
    try:
        for radius in (3.0, 5.0, 7.0):
            compare.editor.shapes = [{"kind": "disk", "cy": 20.0, "cx": 18.0, "radius": radius, "op": "add"}]
        compare.wait(300)
        assert len(delivered) == 6  # three starts per tile
        for tile, _, job in delivered:
            if job is not tile.navigation.job:
                assert job.cancelled or job.done  # superseded: cancelled, or finished before the next start
        check_images(compare, scans)
        final = {name: image.copy() for name, image in compare.images().items() if image is not None}
        for tile, on_partial, job in delivered[:2]:  # the first jobs' callbacks, after the newest started
            on_partial(job.snapshot())
        for name, image in final.items():
            np.testing.assert_array_equal(compare.images()[name], image)
    finally:
        for tile in tiles:
            tile.session.run = originals[id(tile)]


@pytest.mark.cluster
def test_the_detector_view_follows_the_selected_data_set(compare, scans):
    compare.editor.shapes = [{"kind": "disk", "cy": 14.0, "cx": 18.0, "radius": 6.0, "op": "add"}]
    compare.detector_choice.value = "c.h5"
    compare.wait(300)
    try:
        np.testing.assert_array_equal(compare.detector_image(), frames(scans["c"]).sum(axis=(0, 1)))
        np.testing.assert_allclose(compare.images()["c.h5"], virtual_image(scans["c"], Disk(14.0, 18.0, 6.0)), rtol=1e-6)
        for name in ("a.h5", "b.h5"):
            assert "cannot apply" in compare.tiles[name].message.value and compare.results[name] is None
    finally:
        compare.detector_choice.value = "a.h5"
        compare.wait(300)
    check_images(compare, scans)


@pytest.mark.cluster
def test_the_batch_recipe_is_saved_atomically_with_the_lines_that_run_it(compare, scans, tmp_path):
    compare.editor.shapes = [{"kind": "disk", "cy": 20.0, "cx": 18.0, "radius": 4.0, "op": "add"}]
    compare.wait(300)
    compare.recipe_button.click()
    (saved,) = compare.recipe_dir.glob("recipe-*.json")
    recipe = json.loads(saved.read_text())
    assert set(recipe) == {"analyses", "open"} and recipe["open"] == {}
    (analysis,) = [from_dict(d) for d in recipe["analyses"]]
    assert analysis == compare.tiles["a.h5"].analysis
    code = compare.code_box.value
    assert f"inputs = {[scans['a'], scans['b']]!r}" in code
    assert "se.batch(inputs, [VirtualDetector(" in code
    # the line calls stem_explorer.batch as it is declared
    import ast
    import inspect

    import stem_explorer

    call = next(n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "batch")
    inspect.signature(stem_explorer.batch).bind(*call.args, **{k.arg: k.value for k in call.keywords})
    assert f"stem-explorer batch {scans['a']} {scans['b']} --recipe {saved} -o stem_explorer_batch" in code
    assert "bad.h5 (could not be opened)" in code and "c.h5 (the shared mask cannot apply)" in code
    # the recipe computes what the tiles show
    results = compare.tiles["b.h5"].session.compute(analysis)
    np.testing.assert_allclose(results["vd/image"].data, virtual_image(scans["b"], Disk(20.0, 18.0, 4.0)), rtol=1e-6)
    # a folder in the way: the package's error in the status line, nothing written
    blocked = tmp_path / "r.json"
    blocked.mkdir()
    compare._guard(compare.save_recipe, blocked)
    assert "SaveError" in compare.status.value and "r.json" in compare.status.value
    assert os.listdir(tmp_path) == ["r.json"] and os.listdir(blocked) == []


@pytest.mark.cluster
def test_a_file_added_with_the_path_chooser_gets_its_tile_and_image(compare, scans, tmp_path):
    (tmp_path / "sub").mkdir()
    added = make_sample(tmp_path / "d.h5", nav_shape=(4, 9), sig_shape=SIG)
    (tmp_path / "notes.txt").write_text("not a data set")
    chooser = compare.chooser
    chooser.folder.value = str(tmp_path)
    labels = [label for label, _ in chooser.entries.options]
    assert labels == ["../", "sub/", "d.h5"]
    chooser.entries.value = str(tmp_path / "sub")  # a folder opens
    assert chooser.folder.value == str(tmp_path / "sub") and "no data sets here" in chooser.message.value
    chooser.entries.value = ".."
    assert chooser.folder.value == str(tmp_path)
    chooser.entries.value = str(added)
    assert chooser.path.value == str(added)
    compare.detector_choice.value = "b.h5"  # the same detector: every tile keeps its image
    chooser.add_button.click()
    compare.wait(300)
    assert list(compare.tiles)[-1] == "d.h5" and compare.detector_choice.value == "b.h5"
    np.testing.assert_allclose(compare.images()["d.h5"], virtual_image(added, compare.editor.mask()), rtol=1e-6)
    check_images(compare, scans)


def test_tiles_are_high_enough_for_a_colour_bar_or_have_none():
    """bqplot's vertical colour bar is 200 px shorter than the plot area."""
    assert tile_layout((24, 32), 240) == (374, True)  # 374 x 280: the plot area 280 px high, the bar 80 px
    assert tile_layout((40, 20), 240) == (280, True)
    assert tile_layout((4, 256), 240) == (240, False)  # too wide for a bar at any sensible size
    assert tile_layout((300,), 240) == (240, False)  # a line scan is one row


def test_folders_of_data_sets_and_the_listing(tmp_path):
    for name in ("b.h5", "a.npy", "c.txt", ".hidden.h5"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "plain").mkdir()
    store = write_zarr(tmp_path / "store", np.zeros((2, 3, 4, 5), np.uint16), zarr_format=2, chunks=(1, 1, 4, 5))
    found = [str(tmp_path / "a.npy"), str(tmp_path / "b.h5"), str(store)]  # a folder that is a data set too
    assert list_datasets(tmp_path) == found
    assert browse(tmp_path) == ([str(tmp_path / "plain")], found)
    assert not is_many(str(store)) and expand_sources(str(store)) == [str(store)]
    assert is_many(str(tmp_path)) and is_many([str(tmp_path / "b.h5")]) and not is_many(str(tmp_path / "b.h5"))
    assert expand_sources(str(tmp_path)) == list_datasets(tmp_path)
    assert expand_sources(str(tmp_path / "b.h5")) == [str(tmp_path / "b.h5")]
    chooser = PathChooser(tmp_path / "missing")
    assert chooser.entries.options == ()
    assert "is not a folder" in chooser.message.value and "missing" in chooser.message.value
    chooser.add_button.click()
    assert "choose a data set" in chooser.message.value

"""MRC stacks and Direct Electron movies.

Real DE-Server movies (``../shared/realdata/de_mrc``, skipped when absent) are checked
end to end through the engine against their reference sum frame and virtual bright
field. Synthetic MRC files are written with ``mrcfile`` (which writes the MRC2014
header: nx/ny/nz, mode, machine stamp, ``nsymbt`` extended header bytes, voxel size
from cella/mx) and synthetic DE side files follow the DE-Server ``_info.txt``
(``Key = value`` lines: ``Scan - Enable``, ``Scan - Type``, ``Scan - Size X/Y``,
``Scan - ROI Enable``/``Type``/``Size X/Y``, ``Scan - Camera Frames Per Point``,
``Scan - Repeats``) and ``_scan_coordinates.csv`` (``x,y`` per point) layouts of the
real files.
"""

import os

import mrcfile
import numpy as np
import pytest

from stem_explorer.errors import DataSetError, FormatError
from stem_explorer.io import open_dataset
from stem_explorer.io.mrc import read_de_info
from stem_explorer.io.testing import is_memory_mapped, read_through_partitions
from test_io_mib import assert_matches_references

DE_CASES = ["de_mrc_00405_movie", "de_mrc_custom", "de_mrc_roi_random_scan"]


@pytest.mark.parametrize("key", DE_CASES)
def test_real_de_movies_match_references(realdata, key):
    ds = assert_matches_references(realdata, key)  # scan shape from the files alone
    assert ds.format == "mrc" and ds.metadata["camera"] == "DESim"
    with ds.source.open() as reader:
        assert is_memory_mapped(reader.read(0, 3))


def test_every_real_de_file_is_covered(realdata):
    assert {k for k in realdata.manifest if k.startswith("de_mrc")} <= set(DE_CASES)


def test_real_custom_scan_coordinates(realdata):
    entry = realdata.entry("de_mrc_roi_random_scan")
    ds = open_dataset(realdata.file(entry["files"][0]))
    coords = np.asarray(ds.metadata["scan_coordinates"])
    assert coords.shape == (ds.n_frames, 2)
    csv = np.loadtxt(realdata.file(entry["files"][2]), delimiter=",")
    np.testing.assert_array_equal(coords, csv[:, ::-1])  # the CSV lists x,y
    assert ds.metadata["scan_roi_offset"] == [3, 3]


def test_real_info_without_scan_is_a_stack(realdata):
    info = read_de_info(realdata.file("de_mrc/3DTEM_scan_info.txt"))
    assert info["Scan - Enable"] == "Disable" and info["Scan - Size X"] == "8"


# -- synthetic files ----------------------------------------------------------------------------
def write_mrc(path, data, *, voxel=None, extended=None):
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        if extended is not None:
            mrc.set_extended_header(extended)
        if voxel is not None:
            mrc.voxel_size = voxel
    return path


def frames(shape, dtype=np.uint16, seed=0):
    return np.random.default_rng(seed).integers(0, 1000, shape).astype(dtype)


@pytest.mark.parametrize("suffix", [".mrc", ".mrcs"])
def test_plain_stack_with_extended_header_is_mapped(tmp_path, suffix):
    data = frames((7, 5, 6), np.float32)
    ext = np.zeros(4, dtype=[("a", "<f4", 8)])  # 128 bytes of extended header
    path = write_mrc(tmp_path / f"stack{suffix}", data, voxel=1.5, extended=ext)
    ds = open_dataset(path)
    assert ds.format == "mrc" and ds.nav_shape == (7,) and ds.dtype == np.float32
    assert ds.metadata["data_offset"] == 1024 + 128
    assert ds.metadata["voxel_size_angstrom"]["x"] == pytest.approx(1.5)
    np.testing.assert_array_equal(read_through_partitions(ds), data)
    with ds.source.open() as reader:
        assert is_memory_mapped(reader.read(1, 4))
    assert open_dataset(path, nav_shape=(1, 7)).shape == (1, 7, 5, 6)


def test_truncated_mrc(tmp_path):
    path = write_mrc(tmp_path / "cut.mrc", frames((4, 3, 3)))
    os.truncate(path, os.path.getsize(path) - 5)
    with pytest.raises(FormatError, match=r"cut\.mrc.*truncated"):
        open_dataset(path)


def write_de(tmp_path, n_frames, info, coords=None, prefix="acq"):
    data = frames((n_frames, 4, 4), seed=n_frames)
    path = write_mrc(tmp_path / f"{prefix}_movie.mrc", data)
    lines = [f"{k:<60}= {v}" for k, v in {"Camera Name": "Sim", "Exposure Time (seconds)": 2, **info}.items()]
    (tmp_path / f"{prefix}_info.txt").write_text("\n".join(lines) + "\n")
    if coords is not None:
        (tmp_path / f"{prefix}_scan_coordinates.csv").write_text("".join(f"{x},{y}\n" for x, y in coords))
    return path, data


RASTER = {"Scan - Enable": "Enable", "Scan - Type": "Raster", "Scan - Size X": 3, "Scan - Size Y": 2}


def test_de_raster_scan_and_roi(tmp_path):
    path, data = write_de(tmp_path, 6, RASTER)
    ds = open_dataset(path)
    assert ds.nav_shape == (2, 3) and ds.metadata["exposure_time_s"] == 2
    np.testing.assert_array_equal(read_through_partitions(ds), data.reshape(2, 3, 4, 4))
    roi = {**RASTER, "Scan - ROI Enable": "Enable", "Scan - ROI Type": "Raster",
           "Scan - ROI Size X": 2, "Scan - ROI Size Y": 2}
    path, _ = write_de(tmp_path, 4, roi, prefix="roi")
    assert open_dataset(path).nav_shape == (2, 2)


def test_de_raster_frame_count_mismatch(tmp_path):
    path, _ = write_de(tmp_path, 5, RASTER)
    with pytest.raises(FormatError, match=r"5 frames but its _info.txt describes a 2x3 scan"):
        open_dataset(path)
    assert open_dataset(path, nav_shape=(5,)).nav_shape == (5,)
    with pytest.raises(DataSetError, match="nav_shape"):
        open_dataset(path, nav_shape=(2, 3))


def test_de_repeats_give_a_stack(tmp_path):
    path, _ = write_de(tmp_path, 12, {**RASTER, "Scan - Repeats": 2})
    ds = open_dataset(path)
    assert ds.nav_shape == (12,) and ds.metadata["scan_repeats"] == 2


def test_de_disabled_scan_is_a_stack(tmp_path):
    path, _ = write_de(tmp_path, 6, {**RASTER, "Scan - Enable": "Disable"})
    assert open_dataset(path).nav_shape == (6,)


CUSTOM = {"Scan - Enable": "Enable", "Scan - Type": "XY File", "Scan - Size X": 5, "Scan - Size Y": 5}
POINTS = [(0, 0), (4, 1), (2, 3)]  # x, y


def test_de_custom_scan_coordinates_per_frame(tmp_path):
    path, data = write_de(tmp_path, 6, {**CUSTOM, "Scan - Camera Frames Per Point": 2}, POINTS)
    ds = open_dataset(path)
    assert ds.nav_shape == (6,)
    assert ds.metadata["scan_coordinates"] == [[0, 0], [0, 0], [1, 4], [1, 4], [3, 2], [3, 2]]
    np.testing.assert_array_equal(read_through_partitions(ds), data)


def test_de_fewer_frames_than_positions(tmp_path):
    path, _ = write_de(tmp_path, 2, CUSTOM, POINTS)
    ds = open_dataset(path)
    assert ds.metadata["scan_coordinates"] == [[0, 0], [1, 4]]
    assert ds.metadata["positions_not_acquired"] == 1


def test_de_more_frames_than_positions(tmp_path):
    path, _ = write_de(tmp_path, 4, CUSTOM, POINTS)
    with pytest.raises(FormatError, match="4 frames but its scan coordinates give only 3"):
        open_dataset(path)
    ds = open_dataset(path, nav_shape=(4,))
    assert "scan_coordinates" not in ds.metadata


# -- headers that disagree with the file, and absurd side files ---------------------------------
def rewrite_header(path, **fields):
    """Overwrite MRC header fields in place (``nx``, ``ny``, ``nz`` at bytes 0, 4, 8)."""
    at = {"nx": 0, "ny": 4, "nz": 8}
    with open(path, "r+b") as f:
        for name, value in fields.items():
            f.seek(at[name])
            f.write(np.int32(value).tobytes())


@pytest.mark.parametrize("fields,frames_worth", [({"nz": 2}, "2 more frames"), ({"nx": 1}, "")])
def test_header_smaller_than_the_file_is_refused(tmp_path, fields, frames_worth):
    """A header whose nz (or nx) is smaller than the data the file holds was read as
    the header said: half a file, silently."""
    path = write_mrc(tmp_path / "short.mrc", frames((4, 6, 6)))
    rewrite_header(path, **fields)
    with pytest.raises(FormatError) as info:
        open_dataset(path)
    message = str(info.value)
    assert "short.mrc" in message and "left over" in message and "allow_trailing=True" in message
    assert frames_worth in message
    ds = open_dataset(path, allow_trailing=True)  # the user's explicit choice
    assert ds.metadata["trailing_bytes"] > 0


@pytest.mark.parametrize("key", ["Scan - Camera Frames Per Point", "Scan - Repeats"])
def test_absurd_frames_per_point_allocates_nothing(tmp_path, key):
    """ "Frames Per Point = 100000000" on a custom scan made the reader build every
    position (45 GiB); run in a process limited to 2 GiB of address space."""
    import subprocess
    import sys
    import textwrap

    path, _ = write_de(tmp_path, 6, {**CUSTOM, key: 100_000_000}, POINTS)
    code = textwrap.dedent(
        f"""
        import resource
        from stem_explorer.io import open_dataset
        from stem_explorer.errors import StemExplorerError
        resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
        try:
            ds = open_dataset({str(path)!r})
            print("opened", ds.nav_shape, ds.metadata["scan_coordinates"])
        except StemExplorerError as exc:
            print(type(exc).__name__, exc)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    if key == "Scan - Repeats":  # 6 frames of the first of 1e8 passes over 3 points
        assert result.stdout.startswith("opened (6,)"), result.stdout
        assert "[[0, 0], [1, 4], [3, 2], [0, 0], [1, 4], [3, 2]]" in result.stdout
    else:  # one point's frames would not fit the movie: the info is not this movie's
        assert result.stdout.startswith("FormatError"), result.stdout
        assert "100000000 frames per point" in result.stdout and "nav_shape=(6,)" in result.stdout


@pytest.mark.parametrize("info,why", [
    ({**RASTER, "Scan - Repeats": 2}, "2 repeats"),
    ({**RASTER, "Scan - Enable": "Disable"}, "scanning disabled"),
    ({**CUSTOM}, "non-raster scan without a _scan_coordinates.csv"),
])
def test_de_stack_fallbacks_say_why(tmp_path, info, why):
    n = 12 if "Scan - Repeats" in info else 6
    path, _ = write_de(tmp_path, n, info)
    ds = open_dataset(path)
    assert ds.nav_shape == (n,)
    assert why in ds.metadata["scan_shape_source"]
    assert "nav_shape=(rows, columns)" in ds.metadata["scan_shape_hint"]


def test_plain_mrc_stack_says_why(tmp_path):
    ds = open_dataset(write_mrc(tmp_path / "plain.mrc", frames((4, 3, 3))))
    assert "no plain_info.txt" in ds.metadata["scan_shape_source"] or "no _info.txt" in ds.metadata["scan_shape_source"]
    assert "nav_shape=(rows, columns)" in ds.metadata["scan_shape_hint"]

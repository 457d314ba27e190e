"""Scan shape of HDF5 frame stacks from metadata (DECTRIS ARINA / NeXus masters).

Synthetic master + data file pairs follow the DECTRIS NeXus layout of the real ARINA
files in ``../shared/realdata/arina`` (``/entry/data/data_000001``, an external link to
``<name>_data_000001.h5:/entry/data/data`` of shape (frames, sy, sx);
``/entry/instrument/detector/detectorSpecific`` with ``ntrigger`` and ``nimages``;
the scan metadata sidecar ``<name>.h5`` whose group ``STEM Metadata`` has the
attributes ``NumPixelsX`` and ``NumPixelsY``). Frames encode their scan position
(``frame[0, 0] = y``, ``frame[0, 1] = x``), with a non-square scan and detector, so a
transposed or wrongly folded scan cannot pass.
"""

import h5py
import numpy as np
import pytest

from stem_explorer.errors import DataSetError
from stem_explorer.io import open_dataset
from stem_explorer.io.testing import assert_scan_positions, position_frames

NAV, SIG = (3, 5), (6, 4)


def write_arina(folder, frames, *, ntrigger=None, nimages=1, stem_metadata=None, name="scan"):
    """A master + data file pair; ``stem_metadata``: (NumPixelsY, NumPixelsX) of the
    ``<name>.h5`` sidecar (none when None)."""
    n = len(frames)
    with h5py.File(folder / f"{name}_data_000001.h5", "w") as f:
        f.create_dataset("entry/data/data", data=frames, chunks=(1,) + frames.shape[1:])
    master = folder / f"{name}_master.h5"
    with h5py.File(master, "w") as f:
        f["entry/data/data_000001"] = h5py.ExternalLink(f"{name}_data_000001.h5", "/entry/data/data")
        spec = f.create_group("entry/instrument/detector/detectorSpecific")
        spec["ntrigger"] = np.uint64(n if ntrigger is None else ntrigger)
        spec["nimages"] = np.uint64(nimages)
        spec["trigger_mode"] = b"exts"
    if stem_metadata is not None:
        with h5py.File(folder / f"{name}.h5", "w") as f:
            group = f.create_group("STEM Metadata")
            group.attrs["NumPixelsY"], group.attrs["NumPixelsX"] = (np.int64(v) for v in stem_metadata)
            group.attrs["Pixel Size"] = np.array([0.14])
    return master


def test_scan_from_the_stem_metadata_sidecar(tmp_path):
    master = write_arina(tmp_path, position_frames(NAV, SIG).reshape((-1,) + SIG), stem_metadata=NAV)
    ds = open_dataset(master)
    assert_scan_positions(ds, NAV)
    assert ds.metadata["scan_shape_source"] == "STEM Metadata NumPixelsY x NumPixelsX (scan.h5)"
    assert ds.metadata["scan_metadata_file"] == "scan.h5"


def test_scan_from_dectris_triggers(tmp_path):
    master = write_arina(tmp_path, position_frames(NAV, SIG).reshape((-1,) + SIG), ntrigger=3, nimages=5)
    ds = open_dataset(master)
    assert_scan_positions(ds, NAV)
    assert ds.metadata["scan_shape_source"] == "DECTRIS detectorSpecific ntrigger x nimages"


def test_scan_shape_attribute_wins_and_is_checked(tmp_path):
    master = write_arina(tmp_path, position_frames(NAV, SIG).reshape((-1,) + SIG), ntrigger=5, nimages=3)
    with h5py.File(master, "a") as f:
        f["entry/data"].attrs["scan_shape"] = [3, 5]
    ds = open_dataset(master)
    assert_scan_positions(ds, NAV)
    assert ds.metadata["scan_shape_source"] == "scan_shape attribute of /entry/data"
    with h5py.File(master, "a") as f:
        f["entry/data"].attrs["scan_shape"] = [4, 5]
    with pytest.raises(DataSetError, match=r"says the scan is \(4, 5\) \(20 positions\).*15 frames"):
        open_dataset(master)
    assert open_dataset(master, nav_shape=(15,)).metadata["scan_shape_source"] == "nav_shape option"


def test_metadata_that_disagrees_is_not_used(tmp_path):
    master = write_arina(tmp_path, position_frames(NAV, SIG).reshape((-1,) + SIG), stem_metadata=(4, 4))
    ds = open_dataset(master)
    assert ds.nav_shape == (15,)
    source = ds.metadata["scan_shape_source"]
    assert source.startswith("frame count (stack); not used: STEM Metadata") and "4x4 = 16" in source


def test_without_metadata_a_stack_as_before(tmp_path):
    master = write_arina(tmp_path, position_frames(NAV, SIG).reshape((-1,) + SIG))  # ntrigger 15, nimages 1
    ds = open_dataset(master)
    assert ds.nav_shape == (15,)
    source = ds.metadata["scan_shape_source"]
    assert source.startswith("frame count (stack): no 'STEM Metadata' group in the file or a scan.h5")
    assert "ntrigger 15 x nimages 1 says nothing about scan rows" in source
    assert "nav_shape=(rows, columns)" in ds.metadata["scan_shape_hint"]
    assert_scan_positions(open_dataset(master, nav_shape=NAV), NAV)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["frames"] = position_frames(NAV, SIG)
    ds = open_dataset(plain)
    assert_scan_positions(ds, NAV)
    assert ds.metadata["scan_shape_source"] == "dataset shape"


@pytest.mark.parametrize("sidecar,why", [
    ("garbage", "the sidecar scan.h5 cannot be read as HDF5"),
    ("no_group", "the sidecar scan.h5 has no 'STEM Metadata' group"),
    ("no_sizes", "'STEM Metadata' in scan.h5 has no positive NumPixelsY/NumPixelsX"),
])
def test_sidecar_fallbacks_say_why(tmp_path, sidecar, why):
    """An ARINA sidecar that cannot give the scan left a stack labelled only "frame
    count (stack)"."""
    master = write_arina(tmp_path, position_frames(NAV, SIG).reshape((-1,) + SIG))
    if sidecar == "garbage":
        (tmp_path / "scan.h5").write_bytes(b"not an HDF5 file")
    else:
        with h5py.File(tmp_path / "scan.h5", "w") as f:
            group = f.create_group("other" if sidecar == "no_group" else "STEM Metadata")
            group.attrs["Pixel Size"] = 0.14
    ds = open_dataset(master)
    assert ds.nav_shape == (15,)
    assert why in ds.metadata["scan_shape_source"]


def test_real_arina_scan_from_its_metadata(realdata):
    entry = realdata.entry("arina_4x4x192x192")
    master = realdata.file("arina/test_00_master.h5")
    realdata.file("arina/test_00_data_000001.h5")
    realdata.file("arina/test_00.h5")
    ds = open_dataset(master)
    assert ds.shape == tuple(entry["shape"])
    assert ds.metadata["scan_shape_source"] == "STEM Metadata NumPixelsY x NumPixelsX (test_00.h5)"

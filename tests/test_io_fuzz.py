"""Damaged headers never get past the readers as anything but the package's errors.

For each header-driven format a small valid file is written from its specification
(the writers of the format tests), then damaged in seeded random ways: bytes of the
header replaced by random ones or by extreme integers (0, 0x7fffffff, 0xffffffff...),
the file cut short. Opening each copy (and reading its first frames when it opens)
must succeed or raise a :class:`~stem_explorer.errors.StemExplorerError`: no raw
exception, no hang, no allocation out of proportion with the file (the cases run in
a child process whose address space is limited to 3 GiB, so a header-sized
allocation shows up as a MemoryError).
"""

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from stem_explorer.errors import FormatError
from stem_explorer.io import open_dataset
from stem_explorer.io.ser import read_ser_header
from stem_explorer.io.synthetic import write_blockfile, write_mib
from stem_explorer.io.testing import make_frames
from test_io_formats import DMWriter, write_dm, write_ser

#: damaged copies per format (STEM_FUZZ_CASES for a longer search); with the child's
#: start-up this stays within seconds
CASES = int(os.environ.get("STEM_FUZZ_CASES", 120))
_EXTREMES = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x80"]


def _valid_file(folder: Path, kind: str) -> tuple[Path, dict]:
    """A small valid file of ``kind`` and the open_dataset options it needs."""
    data = make_frames((2, 3), (8, 8), "uint16")
    if kind == "ser":
        return Path(write_ser(folder / "scan_1.ser", data)), {}
    if kind == "ser_gaps":
        return Path(write_ser(folder / "gaps_1.ser", data, gaps=True, version=0x0210)), {}
    if kind in ("dm3", "dm4"):
        path = folder / f"scan.{kind}"
        write_dm(path, data, version=int(kind[-1]))
        return path, {}
    if kind == "mib":
        return Path(write_mib(folder / "scan.mib", data.reshape(6, 8, 8), pixel_depth="U16", counter_depth=12)), {}
    if kind == "mrc":
        path = folder / "scan_movie.mrc"
        with mrcfile.new(path, overwrite=True) as mrc:
            mrc.set_data(data.reshape(6, 8, 8))
        return path, {}
    if kind == "blockfile":
        return Path(write_blockfile(folder / "scan.blo", make_frames((2, 3), (8, 8), "uint8"))), {}
    if kind == "npy":
        np.save(folder / "scan.npy", data)
        return folder / "scan.npy", {}
    raise ValueError(kind)


def _damaged_copies(path: Path, folder: Path, seed: int) -> list[str]:
    """``CASES`` damaged copies of ``path``: header bytes randomised or set to extreme
    integers, or the file cut short. Headers lie in the first kB of all these
    formats, and TIA's offset arrays (like a DM file's closing tags) in the last
    bytes, so damage goes there."""
    rng = np.random.default_rng(seed)
    raw = path.read_bytes()
    places = np.unique(np.r_[0 : min(len(raw), 1100), max(0, len(raw) - 256) : len(raw)])
    out = []
    for i in range(CASES):
        damaged = bytearray(raw)
        how = i % 3
        if how == 0:
            for at in rng.choice(places, int(rng.integers(1, 5))):
                damaged[at] = int(rng.integers(0, 256))
        elif how == 1:
            at = int(min(rng.choice(places), len(raw) - 4))
            damaged[at : at + 4] = _EXTREMES[int(rng.integers(len(_EXTREMES)))]
        else:
            damaged = damaged[: int(rng.integers(0, len(raw)))]
        target = folder / f"case{i:03d}{''.join(path.suffixes)}"
        target.write_bytes(bytes(damaged))
        out.append(str(target))
    return out


_WORKER = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))
    from stem_explorer.errors import StemExplorerError
    from stem_explorer.io import open_dataset
    paths, options = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    escaped = []
    for path in paths:
        try:
            ds = open_dataset(path, **options)
            ds.read_frames(0, min(ds.n_frames, 2))
        except StemExplorerError:
            pass
        except BaseException as exc:
            escaped.append([path, type(exc).__name__, str(exc)[:200]])
    print(json.dumps(escaped))
    """
)


@pytest.mark.parametrize("kind", ["ser", "ser_gaps", "dm3", "dm4", "mib", "mrc", "blockfile", "npy"])
def test_damaged_headers_give_package_errors(tmp_path, kind):
    path, options = _valid_file(tmp_path, kind)
    copies = _damaged_copies(path, tmp_path, seed=sum(map(ord, kind)))
    result = subprocess.run(
        [sys.executable, "-c", _WORKER, json.dumps(copies), json.dumps(options)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    escaped = json.loads(result.stdout.strip().splitlines()[-1])
    assert not escaped, "\n".join(f"{os.path.basename(p)}: {t}: {m}" for p, t, m in escaped[:10])


def test_random_de_info_values_give_package_errors(tmp_path):
    """The _info.txt keys the DE reader uses, with random and extreme values, beside a
    6-frame movie (with and without scan coordinates)."""
    rng = np.random.default_rng(7)
    keys = ["Scan - Enable", "Scan - Type", "Scan - Size X", "Scan - Size Y", "Scan - ROI Enable",
            "Scan - ROI Type", "Scan - ROI Size X", "Scan - ROI Size Y", "Scan - Camera Frames Per Point",
            "Scan - Point Repeat", "Scan - Repeats", "Specimen Pixel Size X (nanometers)"]
    values = ["Enable", "Disable", "Raster", "XY File", "Random", "0", "-1", "1", "2", "3", "6",
              "100000000", "1e300", "nan", "inf", "-1e18", "9" * 40, "", "x"]
    copies = []
    for i in range(CASES):
        folder = tmp_path / f"case{i:03d}"
        folder.mkdir()
        with mrcfile.new(folder / "acq_movie.mrc") as mrc:
            mrc.set_data(make_frames((6,), (4, 4), "uint16"))
        chosen = rng.choice(len(keys), int(rng.integers(1, len(keys))), replace=False)
        lines = [f"{keys[k]} = {values[int(rng.integers(len(values)))]}" for k in chosen]
        (folder / "acq_info.txt").write_text("\n".join(lines) + "\n")
        if i % 2:
            points = rng.integers(-3, 5, (int(rng.integers(0, 8)), 2))
            (folder / "acq_scan_coordinates.csv").write_text("".join(f"{x},{y}\n" for x, y in points))
        copies.append(str(folder / "acq_movie.mrc"))
    result = subprocess.run(
        [sys.executable, "-c", _WORKER, json.dumps(copies), "{}"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    escaped = json.loads(result.stdout.strip().splitlines()[-1])
    assert not escaped, "\n".join(f"{p}: {t}: {m}" for p, t, m in escaped[:10])


# -- the damage the random cases found, pinned ------------------------------------------------
def test_dm_groups_nested_beyond_the_stack(tmp_path):
    w = DMWriter(4)
    group = w.group([])
    for _ in range(5000):  # a few bytes per level: RecursionError before the depth limit
        group = w.group([w.entry(20, "g", group)])
    path = tmp_path / "deep.dm4"
    path.write_bytes(w.file([w.entry(20, "ImageList", group)]))
    with pytest.raises(FormatError, match="nested more than 64 deep") as info:
        open_dataset(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("version", [3, 4])
def test_dm_lengths_beyond_the_file(tmp_path, version):
    """A string of 2**38 characters (DM4) or -1 (DM3's signed counts) in a 100-byte
    file: MemoryError, or ValueError from read(), before."""
    w = DMWriter(version)
    length = 2**38 if version == 4 else 2**32 - 1  # packed unsigned: -1 as DM3's int32
    tag = w.entry(21, "Name", b"%%%%" + w.words(2, 18) + struct.pack(">I" if version == 3 else ">Q", length))
    path = tmp_path / f"long.dm{version}"
    path.write_bytes(w.file([tag]))
    with pytest.raises(FormatError, match="does not fit in the file"):
        open_dataset(path)


def test_ser_offsets_past_two_to_the_63(tmp_path):
    """An offset of 2**64 - 1 turned into -1 as int64 and read the file's last bytes."""
    data = make_frames((2, 3), (8, 8), "uint16")
    path = write_ser(tmp_path / "scan_1.ser", data)
    with open(path, "r+b") as f:
        f.seek(read_ser_header(path)["offset_array_offset"])
        f.write(b"\xff" * 8)
    with pytest.raises(FormatError, match="offset array points to element headers beyond"):
        open_dataset(path)

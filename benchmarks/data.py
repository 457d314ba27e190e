"""The benchmark's data sets: created once in a folder, reused while present.

One synthetic sample (``stem_explorer.sample.make_sample``, HDF5 contiguous, uint16)
is the source; the files the workloads read are converted from it by streaming
blocks of scan rows, so memory stays bounded (a few tens of MiB) at any size:

* ``uint16`` raw binary, the full scan (256 x 256 x 128 x 128: 2 GiB);
* ``float32`` raw binary of the left half of the scan (256 x 128 x 128 x 128:
  also 2 GiB, so both dtypes are measured on a 2 GiB file as the issue's targets
  and the LiberTEM figures are);
* ``uint16`` HDF5, chunked by whole frames ``(1, 16, 128, 128)``, uncompressed.

Every file is written under a temporary name and renamed when complete, so an
interrupted run never leaves a truncated data set behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

#: HDF5 dataset path of the sample files (the one ``make_sample`` writes).
H5_PATH = "/data/frames"

#: Scan shapes of a full and a ``--small`` run; the detector is 128 x 128 in both.
FULL_NAV = (256, 256)
SMALL_NAV = (64, 64)
SIG = (128, 128)

#: Frames per chunk along the scan's fast axis in the chunked HDF5 copy.
CHUNK_FRAMES = 16

#: Bytes per block while converting (rounded to whole scan rows).
BLOCK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class BenchData:
    """One data set of the benchmark: how to open it and what it is."""

    key: str  # "raw-uint16", "raw-float32", "hdf5-uint16"
    format: str  # "raw" or "hdf5"
    dtype: str
    path: Path
    nav_shape: tuple
    sig_shape: tuple

    @property
    def nbytes(self) -> int:
        """Size of the frames in bytes (the numerator of every GB/s figure)."""
        n = int(np.prod(self.nav_shape + self.sig_shape))
        return n * np.dtype(self.dtype).itemsize

    def open(self):
        """The ``stem_explorer`` DataSet of this file."""
        from stem_explorer import open_dataset

        if self.format == "raw":
            return open_dataset(
                str(self.path), format="raw", nav_shape=self.nav_shape,
                sig_shape=self.sig_shape, dtype=self.dtype,
            )
        return open_dataset(str(self.path), dataset=H5_PATH)

    def describe(self) -> dict:
        """A JSON-friendly description."""
        return {
            "key": self.key, "format": self.format, "dtype": self.dtype,
            "path": str(self.path), "nav_shape": list(self.nav_shape),
            "sig_shape": list(self.sig_shape), "nbytes": self.nbytes,
        }


def at_least_one(text: str) -> int:
    """argparse type of counts (``--repeat``, ``--workers``): an int >= 1."""
    import argparse

    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_data_options(parser) -> None:
    """The options of the suite's side benchmarks (``--hdfs``, ``--formats``): the data
    folder shared with the main benchmark, its size, and the timed runs."""
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--dir", default=str(root / "bench_data"), help="data folder (shared with the main benchmark)")
    parser.add_argument("--small", action="store_true", help="64 x 64 scan (128 MiB as uint16) instead of 256 x 256 (2 GiB)")
    parser.add_argument("--repeat", type=at_least_one, default=5, help="timed runs per row, after one warm-up")


def plan(folder: Path, small: bool = False) -> dict[str, BenchData]:
    """The data sets of a full or ``--small`` run in ``folder`` (not created yet)."""
    ny, nx = SMALL_NAV if small else FULL_NAV
    tag = f"{ny}x{nx}x{SIG[0]}x{SIG[1]}"
    half = (ny, nx // 2)
    return {
        "raw-uint16": BenchData("raw-uint16", "raw", "uint16", folder / f"u16_{tag}.raw", (ny, nx), SIG),
        "raw-float32": BenchData(
            "raw-float32", "raw", "float32", folder / f"f32_{half[0]}x{half[1]}x{SIG[0]}x{SIG[1]}.raw", half, SIG
        ),
        "hdf5-uint16": BenchData("hdf5-uint16", "hdf5", "uint16", folder / f"u16_{tag}_chunked.h5", (ny, nx), SIG),
    }


def ensure(folder, small: bool = False, log: Callable[[str], None] = print,
           keys=None) -> dict[str, BenchData]:
    """Create the data sets that are missing in ``folder`` (only those of ``keys``
    when given); return all of them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sets = plan(folder, small)
    missing = [d for d in sets.values() if not d.path.exists() and (keys is None or d.key in keys)]
    if not missing:
        return sets
    nav = sets["raw-uint16"].nav_shape
    source = folder / f"sample_{nav[0]}x{nav[1]}x{SIG[0]}x{SIG[1]}.h5"
    if not source.exists():
        from stem_explorer.sample import make_sample

        log(f"generating {source} (make_sample, uint16) ...")
        make_sample(source, nav_shape=nav, sig_shape=SIG, dtype="uint16")
    for data in missing:
        log(f"converting {source.name} -> {data.path.name} ...")
        _convert(source, data)
    return sets


def _row_blocks(source) -> Iterator[tuple[int, np.ndarray]]:
    """``(first_row, rows)`` blocks of scan rows of the source, about BLOCK_BYTES each."""
    ny, nx = source.shape[:2]
    row_bytes = nx * int(np.prod(source.shape[2:])) * source.dtype.itemsize
    step = max(1, BLOCK_BYTES // row_bytes)
    for r0 in range(0, ny, step):
        yield r0, source[r0:r0 + step]


def _convert(source_path: Path, data: BenchData) -> None:
    """Write ``data`` from the source sample, block by block, atomically."""
    import h5py

    tmp = data.path.with_name(data.path.name + ".tmp")
    try:
        with h5py.File(source_path, "r") as src:
            blocks = _row_blocks(src[H5_PATH])
            if data.format == "raw":
                _write_raw(tmp, blocks, data)
            else:
                _write_chunked(tmp, blocks, data)
        os.replace(tmp, data.path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_raw(tmp: Path, blocks, data: BenchData) -> None:
    """Raw binary: the first ``nav_shape[1]`` columns of every row, in ``data.dtype``."""
    ncols = data.nav_shape[1]
    with open(tmp, "wb") as out:
        for _, rows in blocks:
            np.ascontiguousarray(rows[:, :ncols], dtype=data.dtype).tofile(out)


def _write_chunked(tmp: Path, blocks, data: BenchData) -> None:
    """HDF5 chunked by whole frames, uncompressed."""
    import h5py

    chunks = (1, min(CHUNK_FRAMES, data.nav_shape[1])) + tuple(data.sig_shape)
    with h5py.File(tmp, "w") as out:
        dset = out.create_dataset(
            H5_PATH, shape=data.nav_shape + data.sig_shape, dtype=data.dtype, chunks=chunks
        )
        for r0, rows in blocks:
            dset[r0:r0 + rows.shape[0]] = rows

"""Named result arrays with axis metadata and provenance; saving and export.

A :class:`Results` maps keys ``"<analysis label>/<name>"`` (e.g. ``"com/shift_x"``) to
:class:`ResultArray` objects. It remembers how it was made (:attr:`Results.provenance`:
analysis parameters and masks as JSON, the source data set, software version, time),
and every export writes that provenance along with the numbers.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ._json import jsonable


@dataclass
class ResultArray:
    """A numpy array with named dimensions, coordinates and attributes."""

    name: str
    data: np.ndarray
    dims: tuple[str, ...]
    coords: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        self.dims = tuple(self.dims)
        if len(self.dims) != np.ndim(self.data):
            raise ValueError(f"{self.name}: dims {self.dims} do not match shape {np.shape(self.data)}")

    @property
    def shape(self) -> tuple[int, ...]:
        return np.shape(self.data)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.data, dtype=dtype)

    def to_xarray(self):
        """This array as an ``xarray.DataArray`` (needs xarray)."""
        import xarray

        coords = {d: c for d, c in self.coords.items() if d in self.dims}
        return xarray.DataArray(self.data, dims=self.dims, coords=coords, name=self.name, attrs=_flat_attrs(self.attrs))

    def __repr__(self) -> str:
        return f"<ResultArray {self.name} {dict(zip(self.dims, self.shape))} {np.asarray(self.data).dtype}>"


class Results(Mapping):
    """The results of one run: ``results["vd/bf"]``, ``results.to_numpy()``..."""

    def __init__(self, arrays: dict, provenance: Optional[dict] = None):
        self._arrays = dict(arrays)
        self.provenance = dict(provenance or {})

    def __getitem__(self, key: str) -> ResultArray:
        try:
            return self._arrays[key]
        except KeyError:
            raise KeyError(f"no result {key!r}; available: {', '.join(self._arrays)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        lines = [f"<Results with {len(self)} arrays>"]
        lines += [f"  {k}: {dict(zip(a.dims, a.shape))}" for k, a in self._arrays.items()]
        return "\n".join(lines)

    def group(self, label: str) -> dict:
        """The arrays of one analysis, keyed by their short names."""
        prefix = label + "/"
        return {k[len(prefix):]: a for k, a in self._arrays.items() if k.startswith(prefix)}

    def to_numpy(self) -> dict:
        """Plain ``{key: ndarray}``."""
        return {k: np.asarray(a.data) for k, a in self._arrays.items()}

    def to_xarray(self):
        """An ``xarray.Dataset`` with scan/detector coordinates and provenance."""
        import xarray

        ds = xarray.Dataset({k: a.to_xarray() for k, a in self._arrays.items()})
        ds.attrs["provenance"] = json.dumps(self.provenance)
        return ds

    # -- files ---------------------------------------------------------------------------
    def save(self, path, *, overwrite: bool = True) -> Path:
        """Write every array and the provenance to an HDF5 file, atomically.

        The file is written under a temporary name in the same folder and renamed into
        place at the end, so an interrupted save never leaves a corrupt file at
        ``path`` (nor replaces a good one).
        """
        import h5py

        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        with _atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs["provenance"] = json.dumps(self.provenance)
                f.attrs["software"] = "stem_explorer"
                f.attrs["keys"] = json.dumps(list(self._arrays))
                for key, array in self._arrays.items():
                    dset = f.create_dataset(f"results/{key}", data=np.asarray(array.data))
                    dset.attrs["dims"] = json.dumps(list(array.dims))
                    dset.attrs["attrs"] = json.dumps(jsonable(array.attrs))
                    for dim, values in array.coords.items():
                        f.create_dataset(f"coords/{key}/{dim}", data=np.asarray(values))
        return path

    @classmethod
    def load(cls, path) -> "Results":
        """Read a file written by :meth:`save`."""
        import h5py

        arrays = {}
        with h5py.File(path, "r") as f:
            provenance = json.loads(f.attrs["provenance"])
            for key in json.loads(f.attrs["keys"]):
                dset = f["results"][key]
                coords = {}
                if f"coords/{key}" in f:
                    coords = {d: c[()] for d, c in f[f"coords/{key}"].items()}
                arrays[key] = ResultArray(
                    key.rsplit("/", 1)[-1], dset[()], tuple(json.loads(dset.attrs["dims"])),
                    coords, json.loads(dset.attrs["attrs"]),
                )
        return cls(arrays, provenance)

    def to_tiff(self, folder, *, keys=None) -> list:
        """One float32 TIFF per array (``<label>_<name>.tif``) with the provenance in
        the image description; returns the paths. Needs tifffile."""
        import tifffile

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for key in keys or list(self):
            array = self[key]
            target = folder / (key.replace("/", "_") + ".tif")
            description = json.dumps({"key": key, "dims": list(array.dims), "provenance": self.provenance})
            with _atomic_path(target) as tmp:
                tifffile.imwrite(tmp, np.asarray(array.data, dtype=np.float32), description=description)
            written.append(target)
        return written


class _atomic_path:
    """Context manager yielding a temporary path that replaces ``path`` on success."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def __enter__(self) -> str:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass


def _flat_attrs(attrs: dict) -> dict:
    """xarray/netCDF attributes must be scalars or strings: JSON-encode the rest."""
    return {k: v if isinstance(v, (str, int, float)) else json.dumps(jsonable(v)) for k, v in attrs.items()}

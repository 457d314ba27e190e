"""Named result arrays with axis metadata and provenance; saving and export.

A :class:`Results` maps keys ``"<analysis label>/<name>"`` (e.g. ``"com/shift_x"``) to
:class:`ResultArray` objects. It remembers how it was made (:attr:`Results.provenance`:
analysis parameters and masks as JSON, the source data set, software version, time),
and whether it covers the whole scan (:attr:`~stem_explorer.Results.complete`, and which positions
in ``Results.filled``: results of a job still running or cancelled are partial);
every export writes that provenance along with the numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from ._atomic import atomic_write
from ._json import jsonable
from .results_export import tiff_resolution, write_nexus_entry
from .errors import DataSetError, DataSetNotFoundError, DataSetPermissionError, FormatError, ResultNameError


def check_name(name, what: str = "result name") -> str:
    """``name`` if it can name an array or group in a results file, else
    :class:`~stem_explorer.errors.ResultNameError` saying why and what to do.

    HDF5 reads ``/`` as a path separator and ``.`` as the current group, so a name must
    be a non-empty string other than ``.`` and ``..``, without ``/`` or control characters.
    """
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or any(ord(c) < 32 for c in name):
        raise ResultNameError(
            f"{what} {name!r} cannot name a result: use a non-empty name other than '.' "
            f"and '..', without '/' or control characters, e.g. 'bf'"
        )
    return name


def _check_keys(keys) -> None:
    """Every ``"<label>/<name>"`` part is a valid name, and no key is the group of another."""
    keys = list(keys)
    for key in keys:
        if not isinstance(key, str):
            raise ResultNameError(f"result key {key!r} is not a string; keys are '<label>/<name>', e.g. 'vd/bf'")
        for part in key.split("/"):
            check_name(part, f"part {part!r} of result key")
    groups = {key.rsplit("/", i)[0] for key in keys for i in range(1, key.count("/") + 1)}
    clashes = sorted(groups.intersection(keys))
    if clashes:
        raise ResultNameError(f"result key {clashes[0]!r} is also the label of other results ({clashes[0]}/...); rename one of them")


@dataclass
class ResultArray:
    """A numpy array with named dimensions, coordinates and attributes.

    ``coords`` maps a dimension to its coordinate values, ``coord_units`` a dimension
    to the unit of those values: the calibrated scan axes (``"nm"``...) and detector
    axes (``"mrad"``, ``"1/nm"``), or ``"px"`` for pixel indices. ``attrs["units"]``
    is the unit of the values themselves, where they have one.
    """

    name: str
    data: np.ndarray
    dims: tuple[str, ...]
    coords: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)
    coord_units: dict = field(default_factory=dict)

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
        """This array as an ``xarray.DataArray`` (needs xarray); each coordinate
        carries its unit as the ``units`` attribute (the CF convention)."""
        import xarray

        coords = {
            d: xarray.Variable(d, c, attrs={"units": self.coord_units[d]} if d in self.coord_units else {})
            for d, c in self.coords.items()
            if d in self.dims
        }
        return xarray.DataArray(self.data, dims=self.dims, coords=coords, name=self.name, attrs=_flat_attrs(self.attrs))

    def axis_step(self, dim: str) -> Optional[tuple[float, float, str]]:
        """``(origin, step, unit)`` of a dimension whose coordinates are evenly
        spaced and have a unit, else None."""
        values, unit = self.coords.get(dim), self.coord_units.get(dim)
        if values is None or unit is None or len(values) < 2:
            return None
        values = np.asarray(values, dtype=np.float64)
        steps = np.diff(values)
        if not np.all(np.isfinite(steps)) or not np.allclose(steps, steps[0], rtol=1e-6, atol=0) or steps[0] == 0:
            return None
        return float(values[0]), float(steps[0]), unit

    def __repr__(self) -> str:
        return f"<ResultArray {self.name} {dict(zip(self.dims, self.shape))} {np.asarray(self.data).dtype}>"


class Results(Mapping):
    """The results of one run: ``results["vd/bf"]``, ``results.to_numpy()``...

    Parameters
    ----------
    arrays : dict
        ``{"<label>/<name>": ResultArray}``.
    provenance : dict, optional
        How the results were made (JSON).
    filled : array of bool, optional
        Scan-shaped: which scan positions were computed when the results were taken
        (a job's snapshot passes it); None when not known.

    Attributes
    ----------
    filled : numpy.ndarray or None
        Which scan positions the results cover (True: computed).
    """

    def __init__(self, arrays: dict, provenance: Optional[dict] = None, *, filled=None):
        _check_keys(arrays)
        self._arrays = dict(arrays)
        self.provenance = dict(provenance or {})
        self.filled = None if filled is None else np.array(filled, dtype=bool)

    @property
    def complete(self) -> bool:
        """Whether every scan position was computed: from ``filled`` where known,
        else from the provenance's ``"complete"`` (True when neither says)."""
        if self.filled is not None:
            return bool(self.filled.all())
        return bool(self.provenance.get("complete", True))

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
        """Write every array, the provenance and the completeness (the ``complete``
        attribute; the scan-shaped boolean dataset ``filled``) to an HDF5 file,
        atomically.

        The file is written under a temporary name in the same folder, flushed to disk
        and renamed into place at the end, so an interrupted save never leaves a corrupt
        file at ``path`` (nor replaces a good one); temporaries of saves killed before
        (SIGKILL) are removed by the next save to ``path``. The file gets the mode
        ``open(path, "w")`` would give; a symlink at ``path`` is written through.

        Raises
        ------
        FileExistsError
            ``path`` exists and ``overwrite`` is false.
        SaveError
            ``path`` is a folder or cannot be written.
        """
        import h5py

        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
        with atomic_write(path) as tmp:
            with h5py.File(tmp, "w") as f:
                f.attrs["provenance"] = json.dumps(self.provenance)
                f.attrs["software"] = "stem_explorer"
                f.attrs["complete"] = self.complete
                if self.filled is not None:
                    f.create_dataset("filled", data=self.filled, compression="gzip")
                f.attrs["keys"] = json.dumps(list(self._arrays))
                for key, array in self._arrays.items():
                    dset = f.create_dataset(f"results/{key}", data=np.asarray(array.data))
                    dset.attrs["dims"] = json.dumps(list(array.dims))
                    dset.attrs["attrs"] = json.dumps(jsonable(array.attrs))
                    for dim, values in array.coords.items():
                        coord = f.create_dataset(f"coords/{key}/{dim}", data=np.asarray(values))
                        if dim in array.coord_units:
                            coord.attrs["units"] = array.coord_units[dim]
                write_nexus_entry(f, self._arrays)
        return path

    @classmethod
    def load(cls, path) -> "Results":
        """Read a file written by :meth:`save`.

        Raises
        ------
        DataSetNotFoundError
            ``path`` does not exist.
        DataSetPermissionError
            this user may not read ``path``.
        DataSetError
            ``path`` is a folder.
        FormatError
            ``path`` is not a results file of stem_explorer, or is damaged.
        """
        import h5py

        path = Path(path)
        if not path.exists():
            raise DataSetNotFoundError(f"no results file {str(path)!r}; check the path (files are written by Results.save or stem-explorer run -o)")
        if path.is_dir():
            raise DataSetError(f"{str(path)!r} is a folder; give the results file (.h5) inside it")
        try:
            with h5py.File(path, "r") as f:
                return cls._read(f)
        except PermissionError:
            raise DataSetPermissionError(f"cannot read {str(path)!r}: permission denied; ask its owner for read access or copy it") from None
        # foreign HDF5 layouts raise KeyError/TypeError/ValueError, damaged bytes OSError,
        # absurdly nested JSON RecursionError
        except (OSError, KeyError, TypeError, ValueError, RecursionError) as exc:
            raise FormatError(
                f"{str(path)!r} is not a results file of stem_explorer or is damaged "
                f"({type(exc).__name__}: {str(exc)[:200]}); open a file written by Results.save "
                f"or stem-explorer run -o, or run the analyses again to rewrite it"
            ) from None

    @classmethod
    def _read(cls, f) -> "Results":
        if f.attrs.get("software") != "stem_explorer":
            raise ValueError("no 'software' attribute naming stem_explorer")
        provenance = json.loads(f.attrs["provenance"])
        if not isinstance(provenance, dict):
            raise ValueError("the provenance is not a JSON object")
        arrays = {}
        for key in json.loads(f.attrs["keys"]):
            dset = f["results"][key]
            coords, units = {}, {}
            if f"coords/{key}" in f:
                coords = {d: c[()] for d, c in f[f"coords/{key}"].items()}
                units = {d: _text(c.attrs["units"]) for d, c in f[f"coords/{key}"].items() if "units" in c.attrs}
            arrays[key] = ResultArray(
                key.rsplit("/", 1)[-1], dset[()], tuple(json.loads(dset.attrs["dims"])),
                coords, json.loads(dset.attrs["attrs"]), units,
            )
        filled = f["filled"][()] if "filled" in f else None
        if filled is not None and filled.dtype != bool:
            raise ValueError(f"its 'filled' dataset holds {filled.dtype} values, not booleans")
        return cls(arrays, provenance, filled=filled)

    def to_tiff(self, folder, *, keys=None) -> list:
        """One float32 TIFF per array (``<label>_<name>.tif``) with the provenance in
        the image description; returns the paths. Needs tifffile.

        Images whose two axes are calibrated carry it in the TIFF resolution tags
        (pixels per centimetre for lengths, per unit otherwise; see
        :func:`~stem_explorer.results_export.tiff_resolution`), and every axis's
        origin, step and unit in the description's ``"axes"``.
        """
        import tifffile

        folder = Path(folder)
        written = []
        for key in keys or list(self):
            array = self[key]
            target = folder / (key.replace("/", "_") + ".tif")
            axes = {d: dict(zip(("origin", "step", "units"), s)) for d in array.dims if (s := array.axis_step(d))}
            description = json.dumps({"key": key, "dims": list(array.dims), "axes": axes,
                                      "units": array.attrs.get("units"), "provenance": self.provenance})
            with atomic_write(target) as tmp:
                tifffile.imwrite(tmp, np.asarray(array.data, dtype=np.float32), description=description,
                                 **tiff_resolution(array))
            written.append(target)
        return written




def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _flat_attrs(attrs: dict) -> dict:
    """xarray/netCDF attributes must be scalars or strings: JSON-encode the rest."""
    return {k: v if isinstance(v, (str, int, float)) else json.dumps(jsonable(v)) for k, v in attrs.items()}

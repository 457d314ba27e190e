"""Virtual HDF5 datasets whose source files are missing.

A virtual dataset (VDS) maps parts of itself onto datasets in other files, and HDF5
reads its fill value, usually zeros, wherever a source file cannot be found, without
any error: a master file copied without one of its data files gives frames of zeros.
So every source is looked up when the data set is opened, where HDF5 looks for it
(the VDS documentation: an absolute name as given, else the name's last component
under ``HDF5_VDS_PREFIX`` (where ``${ORIGIN}`` is the VDS file's folder), then beside
the VDS file, then in the working directory), and a missing file or dataset is an
error naming it.
"""

from __future__ import annotations

import os
from typing import Optional

import h5py

from ..errors import DataSetNotFoundError, FormatError

__all__ = ["check_virtual_sources"]

#: the VDS notation for "this same file"
_SAME_FILE = "."


def check_virtual_sources(dset: h5py.Dataset, ds_path: str, path: str) -> Optional[list[str]]:
    """The source file names of the virtual dataset ``dset`` (None when it is not
    virtual); raises :class:`DataSetNotFoundError` naming the first source file, or
    dataset in it, that is missing."""
    if not dset.is_virtual:
        return None
    vds_file = os.path.abspath(dset.file.filename)
    sources: dict[tuple[str, str], None] = {}
    for mapping in dset.virtual_sources():
        sources.setdefault((mapping.file_name, mapping.dset_name), None)
    for file_name, dset_name in sources:
        if "%" in file_name:
            continue  # a printf-style pattern of an unlimited mapping: no one file to find
        if file_name == _SAME_FILE:
            if dset_name not in dset.file:
                raise _missing(ds_path, path, f"its own dataset {dset_name!r}")
            continue
        found = _locate(file_name, vds_file)
        if found is None:
            raise _missing(ds_path, path, f"source file {file_name!r}")
        try:
            with h5py.File(found, "r") as source:
                present = dset_name in source
        except OSError as exc:
            raise FormatError(
                f"dataset {ds_path!r} in {path!r} is a virtual dataset whose source "
                f"{found!r} cannot be opened as HDF5 ({exc}); restore that file"
            ) from None
        if not present:
            raise _missing(ds_path, path, f"source {found!r}, which has no dataset {dset_name!r}")
    return sorted({name for name, _ in sources})


def _locate(file_name: str, vds_file: str) -> Optional[str]:
    """Where HDF5 finds the source ``file_name`` of a VDS in ``vds_file``, or None."""
    candidates = [file_name] if os.path.isabs(file_name) else []
    relative = os.path.basename(file_name) if os.path.isabs(file_name) else file_name
    prefix = os.environ.get("HDF5_VDS_PREFIX")
    if prefix:
        folder = prefix.replace("${ORIGIN}", os.path.dirname(vds_file))
        candidates.append(os.path.join(folder, relative))
    candidates += [os.path.join(os.path.dirname(vds_file), relative), os.path.abspath(relative)]
    return next((c for c in candidates if os.path.isfile(c)), None)


def _missing(ds_path: str, path: str, what: str) -> DataSetNotFoundError:
    return DataSetNotFoundError(
        f"dataset {ds_path!r} in {path!r} is a virtual dataset whose {what} is missing; "
        f"HDF5 would read its fill value (zeros) there without an error. Put the file "
        f"back beside {os.path.basename(path)!r} (where it was written), or point "
        f"HDF5_VDS_PREFIX at the folder that holds it"
    )

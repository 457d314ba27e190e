"""Reader plugins: a new format is one module that registers a :class:`ReaderPlugin`.

Built-in readers register themselves when :mod:`stem_explorer.io` is imported; third
party packages add readers through the ``stem_explorer.readers`` entry point group,
whose entries are :class:`ReaderPlugin` instances (the way xarray finds backends).
Lookup is by explicit name, then by file suffix, then by the plugins' ``sniff``
functions, which read a few magic bytes for files whose suffix says nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable, Optional

from ..errors import FormatError

ENTRY_POINT_GROUP = "stem_explorer.readers"


@dataclass(frozen=True)
class ReaderPlugin:
    """How to open one format: ``open(path, **options) -> DataSet``."""

    name: str
    open: Callable
    suffixes: tuple[str, ...] = ()
    sniff: Optional[Callable[[str], bool]] = None
    description: str = ""


_READERS: dict[str, ReaderPlugin] = {}
_ENTRY_POINTS_LOADED = False


def register_reader(plugin: ReaderPlugin, *, replace: bool = False) -> ReaderPlugin:
    """Make ``plugin`` available to :func:`stem_explorer.open_dataset`."""
    if plugin.name in _READERS and not replace:
        raise ValueError(f"a reader named {plugin.name!r} is already registered")
    _READERS[plugin.name] = plugin
    return plugin


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        plugin = ep.load()
        if plugin.name not in _READERS:
            _READERS[plugin.name] = plugin


def readers() -> list[ReaderPlugin]:
    """All registered readers, sorted by name."""
    _load_entry_points()
    return sorted(_READERS.values(), key=lambda p: p.name)


def get_reader(name: str) -> ReaderPlugin:
    """The reader registered as ``name``; a clear error lists the known names."""
    _load_entry_points()
    try:
        return _READERS[name]
    except KeyError:
        known = ", ".join(sorted(_READERS))
        raise FormatError(
            f"unknown format {name!r}; known formats: {known} "
            f"(see `stem-explorer formats`)"
        ) from None


def find_reader(path: str) -> ReaderPlugin:
    """Pick a reader for ``path`` by suffix, else by magic bytes."""
    _load_entry_points()
    lower = os.fspath(path).lower()
    by_suffix = [
        p for p in _READERS.values() if any(lower.endswith(s) for s in p.suffixes)
    ]
    # the longest matching suffix wins (".mib.hdr" over ".hdr", say); on a tie a reader
    # that sniffs goes first (an EMPAD ".raw" before the generic raw reader)
    by_suffix.sort(
        key=lambda p: (-max(len(s) for s in p.suffixes if lower.endswith(s)), p.sniff is None)
    )
    for plugin in by_suffix:
        if plugin.sniff is None or plugin.sniff(path):
            return plugin
    for plugin in _READERS.values():
        if plugin.sniff is not None and plugin not in by_suffix and plugin.sniff(path):
            return plugin
    if os.path.isdir(path):
        # a folder named like a file ("x.npy") is no reason to hand it to a file reader
        raise FormatError(
            f"{path!r} is a folder that no reader recognises as a data set; pass the data "
            f"file inside it, or format=... naming a reader of folders"
        )
    if by_suffix:
        return by_suffix[0]
    known = ", ".join(f"{p.name} ({' '.join(p.suffixes)})" for p in readers())
    raise FormatError(
        f"cannot tell the format of {path!r} from its name or first bytes; pass "
        f"format=... with one of: {known}"
    )

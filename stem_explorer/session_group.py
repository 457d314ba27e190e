"""Several data sets on one cluster: a :class:`~stem_explorer.Session` per data set,
all on one dask client, for comparing scans side by side.

One client for all: an embedded cluster per data set would start a scheduler and a
worker per core for each (seconds and hundreds of MiB each) and have them compete for
the same cores. Each data set keeps a session of its own, so its jobs supersede only
its own earlier jobs (``Session.run``'s guarantee holds per data set).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ._options import seconds
from .errors import StemExplorerError
from .io.listing import is_dataset_folder, list_datasets
from .session import MAX_TIMEOUT, Session, check_cluster_options, open_client


@dataclass
class Member:
    """One data set of a :class:`SessionGroup`: its name (unique in the group), the
    source it was given as, and its session, or the error that kept it from opening."""

    name: str
    source: Any
    session: Optional[Session] = None
    error: Optional[BaseException] = None

    @property
    def path(self) -> Optional[str]:
        """The path the data set was opened from (None for arrays)."""
        if isinstance(self.source, (str, os.PathLike)):
            return os.fspath(self.source)
        return getattr(self.source, "path", None) or None


def expand_sources(sources) -> list:
    """The data sets ``sources`` stands for: a folder that is not itself a data set
    stands for the data sets in it (:func:`~stem_explorer.io.listing.list_datasets`);
    a list or tuple for its items, each a path, array or :class:`DataSet`."""
    if isinstance(sources, (str, os.PathLike)):
        path = os.path.expanduser(os.fspath(sources))
        if os.path.isdir(path) and not is_dataset_folder(path):
            return list_datasets(path)
        return [sources]
    return list(sources)


def is_many(source) -> bool:
    """Whether ``source`` is several data sets: a list or tuple, or a folder of data sets."""
    if isinstance(source, (list, tuple)):
        return True
    if isinstance(source, (str, os.PathLike)):
        path = os.path.expanduser(os.fspath(source))
        return os.path.isdir(path) and not is_dataset_folder(path)
    return False


class SessionGroup:
    """Data sets opened on one shared cluster, one :class:`~stem_explorer.Session` each.

    A source that cannot be opened does not stop the others: its :class:`Member` holds
    the error instead of a session.

    Parameters
    ----------
    sources : list or str
        Paths, arrays or data sets, or a folder of data sets.
    client, address, n_workers, timeout, dashboard
        The cluster, as :class:`~stem_explorer.Session` takes them; an embedded cluster
        started here stops with :meth:`close`.
    **open_options
        Options of :func:`~stem_explorer.open_dataset` (and of ``Session``), the same
        for every data set.
    """

    def __init__(
        self,
        sources=(),
        *,
        client=None,
        address: Optional[str] = None,
        n_workers: Optional[int] = None,
        timeout: float = 10.0,
        dashboard: bool = False,
        **open_options,
    ):
        check_cluster_options(client, address, n_workers, dashboard)
        timeout = seconds("timeout", timeout, MAX_TIMEOUT, "how long to wait for the scheduler")
        self.open_options = open_options
        self.members: list[Member] = []
        self.client, self._cluster = open_client(client, address, n_workers, timeout, dashboard)
        self._owns_client = client is None
        for source in expand_sources(sources):
            self.add(source)

    def add(self, source) -> Member:
        """Open ``source`` on the group's cluster and append it; returns its member
        (with the error when it could not be opened)."""
        member = Member(self._unique_name(source), source)
        try:
            if isinstance(source, Session):
                raise StemExplorerError(
                    f"{member.name}: pass paths, arrays or data sets to a group, not sessions (each brings its own cluster)"
                )
            member.session = Session(source, client=self.client, **self.open_options)
        except Exception as exc:  # shown on the data set's tile; the others go on
            member.error = exc
        self.members.append(member)
        return member

    def _unique_name(self, source) -> str:
        if isinstance(source, (str, os.PathLike)):
            path = Path(os.fspath(source))
            name = path.name or str(path)
        else:
            name = getattr(source, "path", None) and Path(source.path).name or f"data {len(self.members) + 1}"
        taken = {m.name for m in self.members}
        if name in taken and isinstance(source, (str, os.PathLike)):
            name = str(Path(Path(os.fspath(source)).parent.name) / name)
        base, n = name, 2
        while name in taken:
            name, n = f"{base} ({n})", n + 1
        return name

    def __getitem__(self, name: str) -> Member:
        for member in self.members:
            if member.name == name:
                return member
        raise KeyError(f"no data set named {name!r}; the group has {[m.name for m in self.members]}")

    def close(self) -> None:
        """Cancel the members' jobs; stop the embedded cluster if the group started it."""
        for member in self.members:
            if member.session is not None:
                member.session.close()
        if self._owns_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self) -> "SessionGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Which dask workers are "where a partition's bytes live".

Partitions name hosts (``Partition.locations``: host names or IPs, as the storage
reports them, e.g. an HDFS DataNode's ``hostName`` and ``ipAddr``); dask workers are
addresses (``tcp://10.1.2.12:39085``). A worker is local to a partition when its host
is one of those hosts, compared as strings and, failing that, as resolved IPs, so a
DataNode reported as ``node12`` matches a worker listening on ``10.1.2.12``.
"""

from __future__ import annotations

import socket
import time
import weakref
from functools import lru_cache
from typing import Iterable, Optional

from .failures import cluster_lost


def address_host(address: str) -> str:
    """``tcp://host:port`` -> ``host`` (IPv6 brackets removed)."""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0]
    return host.strip("[]")


@lru_cache(maxsize=4096)
def _ip(host: str) -> Optional[str]:
    try:
        return socket.gethostbyname(host)
    except (OSError, UnicodeError):
        return None


def same_host(a: str, b: str) -> bool:
    """True when host names/IPs ``a`` and ``b`` name the same machine."""
    if a.lower() == b.lower():
        return True
    ip = _ip(a)
    return ip is not None and ip == _ip(b)


def is_local(worker_address: str, locations: Optional[Iterable[str]]) -> bool:
    """Whether the worker at ``worker_address`` runs on one of ``locations``' hosts
    (a location may also be a worker address itself)."""
    if not locations:
        return False
    host = address_host(worker_address)
    return any(loc == worker_address or same_host(host, address_host(loc)) for loc in locations)


class WorkerIndex:
    """Worker addresses by host (as written and resolved to an IP), built once per
    job so that matching thousands of partitions costs a few lookups each."""

    def __init__(self, worker_addresses: Iterable[str]):
        self._by_key: dict[str, list[str]] = {}
        for address in worker_addresses:
            host = address_host(address)
            for key in dict.fromkeys([address, host.lower(), _ip(host)]):
                if key:
                    self._by_key.setdefault(key, []).append(address)

    def local_to(self, locations: Optional[Iterable[str]]) -> list[str]:
        """The workers local to ``locations`` (hosts, IPs or worker addresses)."""
        found: dict[str, None] = {}
        for loc in locations or ():
            host = address_host(loc)
            for key in (loc, host.lower(), _ip(host)):
                found.update(dict.fromkeys(self._by_key.get(key, ())))
        return list(found)


#: How long a fetched worker list is reused. Fetching it is a blocking round trip to
#: the scheduler (2-20 ms), once or twice per job start; placement only prefers
#: workers (other workers may still run a task), so a list a second old is harmless.
WORKER_LIST_MAX_AGE = 1.0
_worker_lists: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def worker_addresses(client) -> list[str]:
    """Addresses of the workers the client's scheduler knows (at most
    :data:`WORKER_LIST_MAX_AGE` seconds old)."""
    now = time.monotonic()
    cached = _worker_lists.get(client)
    if cached is not None and now - cached[0] < WORKER_LIST_MAX_AGE:
        return list(cached[1])
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # older distributed without the n_workers argument
        info = client.scheduler_info()
    if "workers" not in info:  # a client closed or cut off from its scheduler
        raise cluster_lost(client)
    addresses = list(info["workers"])
    _worker_lists[client] = (now, addresses)
    return list(addresses)

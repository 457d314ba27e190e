"""A cluster of one's own through dask-gateway (JupyterHub, Kubernetes, HPC sites).

dask-gateway (the ``dask-gateway`` client package, the ``[gateway]`` extra) is the
maintained way a shared site hands each user a cluster of their own behind its login:
the gateway server authenticates every request (with JupyterHub's tokens on a hub),
starts the scheduler and workers as that user, and proxies the TLS traffic to them.
Where to find the gateway and how to log in come from dask's configuration, as the
site sets it for every user (``gateway.address``, ``gateway.auth.type``; on a hub,
``DASK_GATEWAY__ADDRESS`` and ``JUPYTERHUB_API_TOKEN`` in the server's environment).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Optional

from .._options import whole_number
from ..errors import ClusterError, OptionError

#: The gateway's setting users change (dask config key, and its environment variable).
ADDRESS_SETTING = "gateway.address (environment: DASK_GATEWAY__ADDRESS)"

#: Workers one session may ask a gateway for: more is a typo, not a plan (sites cap
#: their users far lower in the gateway's own limits).
MAX_GATEWAY_WORKERS = 10_000

#: Largest memory per worker one may ask for, in GiB.
MAX_WORKER_MEMORY_GIB = 4096


class GatewayCluster:
    """A dask-gateway cluster this process created, with a client connected to it.

    ``close()`` shuts the cluster down on the gateway (its workers stop at once,
    rather than when the gateway's idle timeout notices).

    Attributes
    ----------
    client : distributed.Client
        Connected through the gateway's proxy with the cluster's own TLS credentials.
    name : str
        The gateway's name of the cluster.
    dashboard_link : str
        The dask dashboard, served through the gateway's proxy.
    """

    def __init__(self, cluster, client):
        self._cluster = cluster
        self.client = client
        self.name = cluster.name
        self.dashboard_link = cluster.dashboard_link

    def close(self) -> None:
        """Close the client and shut the cluster down (idempotent)."""
        if self._cluster is None:
            return
        try:
            self.client.close()
        finally:
            self._cluster.shutdown()
            self._cluster = None


def start_gateway_cluster(
    n_workers: Optional[int] = None,
    worker_memory=None,
    *,
    timeout: float = 10.0,
    address: Optional[str] = None,
) -> GatewayCluster:
    """A new cluster from the dask-gateway at ``address`` (default: dask's configuration).

    Parameters
    ----------
    n_workers : int, optional
        Workers to ask for (default 1); the session waits up to ``timeout`` for the
        first of them and lets the rest join as the site's scheduler grants them.
    worker_memory : float, optional
        Memory per worker in GiB, for a gateway that offers the ``worker_memory``
        cluster option (the daskhub convention); default: the gateway's.
    timeout : float
        Seconds to wait for the gateway to answer and for the first worker.
    address : str, optional
        The gateway's URL; default ``gateway.address`` of dask's configuration.

    Raises
    ------
    ClusterError
        dask-gateway is not installed, no gateway is configured, it does not answer
        within ``timeout``, it refuses the login, or the cluster does not start; the
        message names the address and the setting to change.
    OptionError
        ``n_workers`` or ``worker_memory`` outside its range, or memory asked of a
        gateway that does not offer it.
    """
    n = 1 if n_workers is None else whole_number(
        "n_workers", n_workers, 1, MAX_GATEWAY_WORKERS, "workers to ask the gateway for"
    )
    memory = _check_memory(worker_memory)
    where = _configured_address(address)
    _check_answers(where, timeout)
    # the Gateway closes itself when dropped (closing it twice raises in dask-gateway 2026.3)
    gateway = _open_gateway(where)
    cluster = _new_cluster(gateway, _cluster_options(gateway, memory))
    try:
        client = cluster.get_client(set_as_default=False)
        cluster.scale(n)
        client.wait_for_workers(1, timeout=timeout)
    except BaseException as exc:
        cluster.shutdown()
        if isinstance(exc, (OSError, TimeoutError)):
            raise ClusterError(
                f"the dask-gateway cluster {cluster.name} at {gateway.address} got no worker within "
                f"{timeout:g} s ({exc}); the site may be out of capacity: try fewer workers, or a longer "
                f"timeout="
            ) from exc
        raise
    return GatewayCluster(cluster, client)


def _check_memory(worker_memory) -> Optional[float]:
    if worker_memory is None:
        return None
    if isinstance(worker_memory, (int, float)) and not isinstance(worker_memory, bool):
        if 0 < worker_memory <= MAX_WORKER_MEMORY_GIB:
            return float(worker_memory)
    raise OptionError(
        f"worker_memory must be a number of GiB above 0 and at most {MAX_WORKER_MEMORY_GIB} "
        f"(memory per gateway worker), got {worker_memory!r}"
    )


def _configured_address(address: Optional[str]) -> str:
    try:
        from dask_gateway.utils import format_template
    except ImportError as exc:
        raise ClusterError(
            'cluster="gateway" needs the dask-gateway client: pip install "stem_explorer[gateway]"'
        ) from exc
    import dask

    where = address or format_template(dask.config.get("gateway.address", None))
    if not where:
        raise ClusterError(
            f'cluster="gateway" but no dask-gateway is configured: set {ADDRESS_SETTING} to the '
            f"gateway's URL (your site's JupyterHub usually sets it for you), or pass neither "
            f"cluster= nor address= to start an embedded cluster"
        )
    return where.rstrip("/")


def _open_gateway(address: str):
    from dask_gateway import Gateway

    try:
        return Gateway(address=address)
    except (ValueError, TypeError, ImportError) as exc:  # the auth settings (gateway.auth.*)
        raise ClusterError(
            f"cannot log in to the dask-gateway at {address}: {exc}; check gateway.auth.type "
            f"(environment: DASK_GATEWAY__AUTH__TYPE) and, for 'jupyterhub', JUPYTERHUB_API_TOKEN"
        ) from exc


def _check_answers(address: str, timeout: float) -> None:
    """A gateway answers its health check within ``timeout``, else a ClusterError.

    The gateway client's own requests have no time limit (a black-holed address
    would hang the notebook), so this bounded request comes first.
    """
    url = f"{address}/api/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = json.loads(response.read() or b"{}").get("status")
    except urllib.error.HTTPError as exc:
        status = f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:  # refused, timed out, no such host, not JSON
        raise ClusterError(
            f"no dask-gateway answered at {address} within {timeout:g} s ({exc}); check "
            f"{ADDRESS_SETTING} and that the gateway is running"
        ) from exc
    if status != "pass":
        raise ClusterError(
            f"the server at {address} is not a healthy dask-gateway (health check: {status}); check "
            f"{ADDRESS_SETTING}"
        )


def _cluster_options(gateway, memory: Optional[float]):
    options = _asking(gateway, gateway.cluster_options)
    if memory is not None:
        if "worker_memory" not in options:
            raise OptionError(
                f"the dask-gateway at {gateway.address} does not let users set worker_memory (its "
                f"options: {', '.join(options) or 'none'}); leave worker_memory out"
            )
        try:
            options.worker_memory = memory
        except (TypeError, ValueError) as exc:  # outside the site's range
            raise OptionError(
                f"worker_memory={memory:g} GiB is not allowed by the dask-gateway at {gateway.address}: {exc}"
            ) from exc
    return options


def _new_cluster(gateway, options):
    return _asking(gateway, lambda: gateway.new_cluster(options, shutdown_on_close=True))


def _asking(gateway, call):
    """``call()``, with the gateway's refusals as ClusterErrors naming it."""
    from aiohttp import ClientError, ClientResponseError
    from dask_gateway.client import GatewayClusterError, GatewayServerError

    try:
        return call()
    except ClientResponseError as exc:
        raise ClusterError(
            f"the dask-gateway at {gateway.address} refused the request (HTTP {exc.status} "
            f"{exc.message}); check your login (gateway.auth.type, JUPYTERHUB_API_TOKEN) and that "
            f"your account may use the gateway"
        ) from exc
    except (GatewayClusterError, GatewayServerError, ClientError, OSError) as exc:
        raise ClusterError(f"the dask-gateway at {gateway.address} could not start a cluster: {exc}") from exc

"""JupyterHub + dask-gateway, for real (tests/hub_stack.py): the hub starts user 1's
server as that OS user; in a kernel of it ``Session(cluster="gateway")`` gets a
cluster through the gateway, logged in with the server's hub token, whose workers
run as user 1 and compute a virtual image equal to numpy; the dashboard answers
through the gateway's proxy; user 2 cannot list, connect to or stop that cluster, nor
reach user 1's server; a token without the gateway's scope is refused with a
ClusterError; closing the session shuts the cluster down.

The same flow in Chromium (log in, open the explorer notebook, draw a mask) is
tests/browser/test_hub_browser.py.
"""

from __future__ import annotations

import json
import os
import urllib.request

import dask
import pytest
from aiohttp import ClientResponseError

from stem_explorer.browser_testing import kernel_client, run_in_kernel
from stem_explorer.errors import ClusterError

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

KERNEL_CODE = """
import json, os
import h5py, numpy as np
from stem_explorer import Session
from stem_explorer.analyses import VirtualDetector
from stem_explorer.masks import Disk, rasterize
session = Session(os.environ["STEM_EXPLORER_DATA"], cluster="gateway", n_workers=2, worker_memory=1, timeout=60)
session.client.wait_for_workers(2, timeout=60)
disk = Disk(20, 22, 7)
image = session.compute(VirtualDetector(disk))["vd/mask0"].data
with h5py.File(os.environ["STEM_EXPLORER_DATA"]) as f:
    data = f["data/frames"][()].astype(np.float64)
reference = np.einsum("abyx,yx->ab", data, rasterize(disk, data.shape[2:]))
workers = session.client.scheduler_info()["workers"].values()
print(json.dumps({
    "equal": bool(np.allclose(image, reference, rtol=1e-6)),
    "worker_uids": sorted(set(session.client.run(os.getuid).values())),
    "memory_limits": sorted({w["memory_limit"] for w in workers}),
    "dashboard": session.dashboard_link,
    "name": session._gateway.name,
    "kernel_uid": os.getuid(),
}))
"""


def gateway_of(hub, token):
    """A dask-gateway client logged in with ``token`` (it closes itself when dropped:
    closing it again raises in dask-gateway 2026.3)."""
    from dask_gateway import Gateway
    from dask_gateway.auth import JupyterHubAuth

    return Gateway(hub.gateway_url, auth=JupyterHubAuth(api_token=token))


def test_gateway_cluster_through_the_hub(hub, monkeypatch):
    user1, user2 = hub.users
    hub.start_server(user1)
    token1 = hub.user_token(user1, [f"access:servers!server={user1.name}/"])
    request = urllib.request.Request(f"{hub.url}/user/{user1.name}/api/kernels", data=b"{}", method="POST",
                                     headers={"Authorization": f"token {token1}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 201  # a kernel, started as user 1 by user 1's server
    client = kernel_client(user1.home / ".local/share/jupyter/runtime")
    try:
        out = json.loads(run_in_kernel(client, KERNEL_CODE, timeout=180).strip().splitlines()[-1])
        assert out["kernel_uid"] == user1.uid  # the spawner ran the server as user 1
        assert os.stat("/").st_uid == 0  # the gateway's cluster folder bug (tests/hub_stack.py) stays worked around
        assert out["equal"], out
        assert out["worker_uids"] == [user1.uid], out  # the gateway started the workers as user 1
        assert out["memory_limits"] == [2**30], out  # worker_memory=1 (GiB) reached the workers
        with urllib.request.urlopen(out["dashboard"], timeout=30) as response:
            page = response.read()
        # the dashboard's page (the one served without bokeh says "Dask needs bokeh")
        assert b"<title>Dask Diagnostic UI</title>" in page and b"needs bokeh" not in page, out["dashboard"]
        assert out["dashboard"].startswith(f"{hub.gateway_url}/clusters/{out['name']}/")

        # user 2, with the gateway's scope: sees none of user 1's clusters, cannot connect or stop it
        gateway2 = gateway_of(hub, hub.user_token(user2, ["access:services!service=dask-gateway"]))
        assert gateway2.list_clusters() == []
        for attempt in (gateway2.connect, gateway2.stop_cluster):
            with pytest.raises(ClientResponseError) as refused:
                attempt(out["name"])
            assert refused.value.status == 403, attempt
        # ... nor reach user 1's server (kernels, notebook, the dashboard link it shows)
        token2 = hub.user_token(user2, [f"access:servers!server={user2.name}/"])
        request = urllib.request.Request(f"{hub.url}/user/{user1.name}/api/kernels",
                                         headers={"Authorization": f"token {token2}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 403
        # user 1's cluster still runs
        assert json.loads(run_in_kernel(client, "print(json.dumps(len(session.client.scheduler_info()['workers'])))")) == 2

        # a hub token without the gateway's scope: the gateway refuses, Session says so
        monkeypatch.setenv("JUPYTERHUB_API_TOKEN", hub.user_token(user2, [f"access:servers!server={user2.name}/"]))
        with dask.config.set({"gateway.address": hub.gateway_url, "gateway.auth.type": "jupyterhub"}):
            from stem_explorer import Session

            with pytest.raises(ClusterError, match=rf"dask-gateway at {hub.gateway_url} refused the request \(HTTP 401"):
                Session(hub.data, cluster="gateway", timeout=30)

        # closing the session shuts user 1's cluster down
        run_in_kernel(client, "session.close()")
        assert gateway_of(hub, hub.user_token(user1, ["access:services!service=dask-gateway"])).list_clusters() == []
    finally:
        client.stop_channels()
        hub.api("DELETE", f"/users/{user1.name}/server")

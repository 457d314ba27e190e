"""Session(cluster="gateway") with no gateway, an unreachable one, a silent one and a
server that is no gateway: a ClusterError naming the address and the setting to
change, within the timeout; bad options are OptionErrors. The working gateway is
tested with the real JupyterHub + dask-gateway stack in tests/test_hub.py."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import dask
import numpy as np
import pytest

from stem_explorer import Session
from stem_explorer.errors import ClusterError, OptionError
from stem_explorer.io import open_dataset

pytest.importorskip("dask_gateway", reason='needs the gateway extra: pip install -e ".[gateway]"')


@pytest.fixture
def dataset(tmp_path):
    data = np.zeros((2, 2, 4, 4), np.uint8)
    path = tmp_path / "data.raw"
    data.tofile(path)
    return open_dataset(path, nav_shape=(2, 2), sig_shape=(4, 4), dtype="u1")


def gateway_session(dataset, address, timeout=2.0, **options):
    with dask.config.set({"gateway.address": address, "gateway.auth.type": "basic"}):
        return Session(dataset, cluster="gateway", timeout=timeout, **options)


def test_no_gateway_configured_names_the_setting(dataset, monkeypatch):
    monkeypatch.delenv("DASK_GATEWAY__ADDRESS", raising=False)
    with dask.config.set({"gateway.address": None}):
        with pytest.raises(ClusterError, match=r"no dask-gateway is configured: set gateway\.address.*DASK_GATEWAY__ADDRESS"):
            Session(dataset, cluster="gateway")


def test_refused_address_is_a_clear_error(dataset):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterError, match=rf"no dask-gateway answered at http://127.0.0.1:{port}.*gateway\.address"):
        gateway_session(dataset, f"http://127.0.0.1:{port}")


def test_silent_gateway_fails_within_the_timeout(dataset):
    # a socket that accepts connections (the kernel's backlog) but never answers:
    # what a firewalled or hung gateway looks like; the gateway client alone would wait forever
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        address = f"http://127.0.0.1:{s.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(ClusterError, match=rf"no dask-gateway answered at {address} within 1 s.*gateway\.address"):
            gateway_session(dataset, address, timeout=1.0)
        assert time.monotonic() - start < 10


def test_a_server_that_is_no_gateway(dataset):
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(ClusterError, match=rf"{address} is not a healthy dask-gateway \(health check: HTTP 404\)"):
            gateway_session(dataset, address)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"cluster": "kubernetes"}, OptionError, 'cluster must be "gateway" or None'),
        ({"cluster": "gateway", "address": "tcp://127.0.0.1:9"}, ClusterError, "not both"),
        ({"worker_memory": 2}, OptionError, 'worker_memory is an option of cluster="gateway"'),
        ({"cluster": "gateway", "dashboard": True}, OptionError, "a gateway's cluster always has one"),
        ({"cluster": "gateway", "n_workers": 0}, OptionError, "n_workers must be a whole number from 1"),
        ({"cluster": "gateway", "worker_memory": -1}, OptionError, "worker_memory must be a number of GiB"),
    ],
)
def test_bad_gateway_options(dataset, options, error, message):
    with dask.config.set({"gateway.address": "http://127.0.0.1:9"}):
        with pytest.raises(error, match=message):
            Session(dataset, **options)

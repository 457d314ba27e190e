"""Run as another local user by tests/test_cluster.py: try to run code in an embedded
cluster through each of its listening ports, the way any local user could.

``python intruder.py PORT...`` prints one JSON object: for each port and attempt,
what came back. An attempt that ran code reports the uid it ran as; HTTP attempts
report the status. Needs only dask.distributed (and cryptography for its own
certificate) on ``sys.path``.
"""

import asyncio
import json
import os
import ssl
import sys
import urllib.error
import urllib.request

from distributed.core import rpc
from distributed.protocol.pickle import dumps
from distributed.security import Security

#: Seconds to wait for any one answer.
TIMEOUT = 3

#: Pages of a dask scheduler's or worker's HTTP server that leak what the cluster does.
HTTP_PATHS = ["/status", "/info/main/workers.html", "/metrics", "/health", "/json/identity.json"]


def connection_args(address: str) -> dict:
    """Plain TCP, or TLS with a certificate of this user's own making that trusts any
    server (so only the server's check of the client can refuse)."""
    if address.startswith("tcp://"):
        return {}
    args = Security.temporary().get_connection_args("client")
    args["ssl_context"].check_hostname = False
    args["ssl_context"].verify_mode = ssl.CERT_NONE
    return args


async def run_code(address: str) -> str:
    """Ask the server at ``address`` to run ``os.getuid``: the scheduler's handler is
    ``run_function``, a worker's and a nanny's is ``run``."""
    answers = []
    for op in ("run_function", "run"):
        try:
            async with rpc(address, connection_args=connection_args(address), timeout=TIMEOUT) as server:
                reply = await asyncio.wait_for(getattr(server, op)(function=dumps(os.getuid)), TIMEOUT)
        except Exception as exc:  # refused, as it should be: the other op fares no better
            return f"refused ({op}: {type(exc).__name__}: {exc})"[:300]
        if isinstance(reply, dict) and reply.get("status") == "OK":
            return f"RAN CODE as uid {reply['result']}"
        answers.append(f"{op}: {reply!r}"[:200])  # this server has no such op
    return "refused (" + "; ".join(answers) + ")"


def http_get(port: int, path: str) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT) as response:
            return f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except Exception as exc:
        return f"{type(exc).__name__}"


def main(ports: list) -> dict:
    attempts = {}
    for port in ports:
        for protocol in ("tcp", "tls"):
            attempts[f"{port} {protocol}"] = asyncio.run(run_code(f"{protocol}://127.0.0.1:{port}"))
        for path in HTTP_PATHS:
            attempts[f"{port} http {path}"] = answer = http_get(port, path)
            if not answer.startswith("HTTP"):  # not an HTTP server
                break
    return attempts


if __name__ == "__main__":
    print(json.dumps({"uid": os.getuid(), "attempts": main([int(p) for p in sys.argv[1:]])}))

"""Embedded workers in processes of their own, started without the caller's script.

A ``LocalCluster`` starts its worker processes with multiprocessing's *spawn*, which
runs the caller's ``__main__`` again in every worker: a script without an ``if
__name__ == "__main__":`` guard starts a second Session there, and a script read from
stdin (``python - < script.py``) cannot be run again at all. Here each worker's nanny
runs in a fresh interpreter (:mod:`.interpreters`, started with ``python -c``), which
imports only stem_explorer and dask; the nanny then forks its worker (a copy of a small
process that holds no user code and has no files open, and the worker, and any
restart of it after a crash, starts without importing anything again).

:class:`NannyProcess` is the parent's side: a ``distributed.deploy.ProcessInterface``,
the interface dask's ``SpecCluster`` starts and stops its workers through. The child's
side is :func:`serve`. What the child needs (scheduler address, the worker's TLS key,
options) arrives as JSON lines on its stdin, never on the command line or in the
environment (both readable by other users or inherited further); the stdin pipe then
stays open, and its end (the parent closed it, or died) tells the nanny to stop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Optional

from distributed.deploy.spec import ProcessInterface

from ..errors import ClusterError
from .interpreters import Interpreters

#: Seconds a nanny may take to start its worker (an interpreter start and imports:
#: about 1.5 s on an idle machine, many times that on a loaded one).
START_TIMEOUT = 120.0

#: Seconds a nanny may take to stop once told to, before it is killed, and between
#: looks at whether it has.
CLOSE_TIMEOUT = 10.0
CLOSE_POLL = 0.02

#: How the nanny starts its worker: fork where the platform forks safely (Linux);
#: elsewhere spawn, which in a nanny's process has no script to run again (its main
#: is ``python -c``).
WORKER_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


class NannyProcess(ProcessInterface):
    """A dask ``Nanny`` (and so a worker) in a child interpreter of its own.

    Parameters
    ----------
    scheduler : str
        The scheduler's address (``SpecCluster`` passes it).
    name : str or int, optional
        The worker's name.
    interpreters : Interpreters
        Where the child interpreter comes from.
    nanny_options : dict
        Keyword arguments of ``distributed.Nanny`` (JSON-able).
    security : dict
        The worker's TLS fields of a ``distributed.Security`` (PEM text), or empty.
    config : dict
        dask configuration set in the child before the nanny starts.
    """

    def __init__(self, scheduler: str, name=None, *, interpreters: Interpreters, nanny_options: dict,
                 security: dict, config: dict):
        self.scheduler = scheduler
        self.name = name
        self.interpreters = interpreters
        self.nanny_options = nanny_options
        self.security = security
        self.config = config
        self.process: Optional[subprocess.Popen] = None
        super().__init__(scheduler, name)

    async def start(self) -> None:
        interpreter = self.interpreters.take()
        self.process = interpreter.process
        interpreter.send({
            "scheduler": self.scheduler, "name": self.name, "nanny_options": self.nanny_options,
            "security": self.security, "config": self.config,
        })
        report = await _read_report(interpreter.report, START_TIMEOUT)
        if "address" not in report:
            await self._stop()
            raise ClusterError(
                f"an embedded worker did not start: {report.get('error', 'its process exited')} "
                f"(exit code {self.process.returncode}); see its log above, or start a cluster of "
                f"your own and pass its address"
            )
        self.address = report["address"]
        await super().start()

    async def close(self) -> None:
        await self._stop()
        await super().close()

    async def _stop(self) -> None:
        """End of stdin: the nanny closes its worker and exits; killed if it does not."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.stdin.close()
        # polled: no thread to wait in (at interpreter exit, when dask closes clusters
        # left open, no new thread may start)
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while self.process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(CLOSE_POLL)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def load_tls_defaults() -> None:
    """Load now what tornado loads, in the event loop, for the first TLS connection a
    process accepts: a default client context, with the system's CA bundle (about
    25 ms on an idle machine, far more on a busy one), though an accepted socket is
    already wrapped with the cluster's own context. Done ahead in the scheduler's
    process, and in each nanny before it forks its worker, it no longer stalls the
    scheduler while workers register, nor a worker's first result. (A private function
    of tornado's: if it goes, only this saving goes.)"""
    from tornado import netutil

    defaults = getattr(netutil, "_client_ssl_defaults", None)
    if defaults is not None:
        defaults()


async def _read_report(fd: int, timeout: float) -> dict:
    """The child's one-line JSON report on the pipe ``fd`` (closed after); ``{}`` if
    it closed the pipe (exited) without one or took longer than ``timeout`` s."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), open(fd, "rb", 0))
    try:
        line = await asyncio.wait_for(reader.readline(), timeout)
    except asyncio.TimeoutError:
        return {"error": f"no answer within {timeout:g} s"}
    finally:
        transport.close()
    return json.loads(line) if line.strip() else {}


# -- the child's side -----------------------------------------------------------------------
def serve(report_fd: int) -> None:
    """Run one nanny as the second line on stdin says, until stdin ends (the child's
    entry point); report its address, or why it did not start, on ``report_fd``."""
    line = sys.stdin.readline()
    if not line:  # the cluster closed before it needed this interpreter
        return
    spec = json.loads(line)
    import dask

    # Ctrl-C in a terminal reaches the whole foreground process group: the caller stops
    # the cluster (or dies, which closes our stdin). A handler, not SIG_IGN, so that
    # programs the worker runs get the default again.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    # the nanny's level for the whole life of the process (its closing messages too)
    logging.getLogger("distributed").setLevel(spec["nanny_options"].get("silence_logs") or logging.WARNING)
    dask.config.set({"distributed.worker.multiprocessing-method": WORKER_START_METHOD, **spec["config"]})
    report = os.fdopen(report_fd, "w")
    if spec["security"]:
        load_tls_defaults()
    asyncio.run(_serve(spec, report))


async def _serve(spec: dict, report) -> None:
    from distributed import Nanny

    stdin_closed = asyncio.get_running_loop().create_future()
    _watch_stdin(stdin_closed)
    try:
        nanny = await Nanny(spec["scheduler"], name=spec["name"], security=spec["security"] or None,
                            **spec["nanny_options"])
    except Exception as exc:  # reported to the parent, which raises it
        _send(report, {"error": f"{type(exc).__name__}: {exc}"})
        raise
    _send(report, {"address": nanny.address})
    await asyncio.wait([stdin_closed, asyncio.ensure_future(nanny.finished())], return_when=asyncio.FIRST_COMPLETED)
    await nanny.close()


def _watch_stdin(closed: asyncio.Future) -> None:
    """Resolve ``closed`` when stdin reaches its end (watched by the event loop, not a
    thread of ours, so there is one thread fewer when the nanny forks its worker)."""

    class Watcher(asyncio.Protocol):
        def connection_lost(self, exc):
            if not closed.done():
                closed.set_result(None)

    asyncio.ensure_future(asyncio.get_running_loop().connect_read_pipe(Watcher, sys.stdin.buffer))


def _send(report, message: dict) -> None:
    report.write(json.dumps(message) + "\n")
    report.close()


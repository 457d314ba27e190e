"""Child interpreters for the embedded cluster's nannies, started ahead of need.

They are started before this process imports dask (about 0.3 s) and makes the
cluster's certificate, so that their own imports (stem_explorer and dask, about 0.7 s)
overlap both; so this module imports neither. What runs in them is
:func:`.worker_processes.serve`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

#: What the child interpreter runs: the parent's ``sys.path`` (first line on stdin, so
#: workers import what the caller can, e.g. modules beside a script), then
#: :func:`~stem_explorer.engine.worker_processes.serve`.
#: No first line means the cluster closed before it needed this interpreter.
BOOTSTRAP = """\
import json, sys
line = sys.stdin.readline()
if line:
    sys.path[:] = json.loads(line)
    from stem_explorer.engine.worker_processes import serve
    serve(int(sys.argv[1]))
"""


class Interpreter:
    """A child interpreter running :data:`BOOTSTRAP`: it imports stem_explorer and dask
    at once, then waits on stdin for what to run.

    ``report`` is the read end of the pipe on which it answers (its own end's number
    is its one argument).
    """

    def __init__(self, env: dict):
        report, child_end = os.pipe()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", BOOTSTRAP, str(child_end)],
                stdin=subprocess.PIPE, env={**os.environ, **env}, pass_fds=(child_end,),
            )
        except BaseException:
            os.close(report)
            raise
        finally:
            os.close(child_end)
        self.report = report
        self.send([str(entry) for entry in sys.path])  # may hold Path objects

    def send(self, message) -> None:
        """One JSON line to its stdin (a few kB: the pipe takes it without blocking)."""
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except BrokenPipeError:  # it died: its report (none) says so
            pass


class Interpreters:
    """``count`` interpreters started now, for the workers of a cluster about to start;
    any more are started when taken."""

    def __init__(self, count: int, env: dict):
        self.env = env
        self._ready = [Interpreter(env) for _ in range(count)]

    def take(self) -> Interpreter:
        return self._ready.pop() if self._ready else Interpreter(self.env)

    def close(self) -> None:
        """End those not taken (their stdin closes before they read a first line)."""
        while self._ready:
            interpreter = self._ready.pop()
            interpreter.process.stdin.close()
            interpreter.process.wait()
            os.close(interpreter.report)

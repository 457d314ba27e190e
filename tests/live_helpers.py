"""Running the Merlin simulator as a separate process (``stem-explorer simulate merlin``)
for the live acquisition tests."""

import contextlib
import re
import subprocess
import sys
from dataclasses import dataclass


@dataclass
class SimProcess:
    proc: subprocess.Popen
    control_port: int
    data_port: int

    @property
    def ports(self) -> dict:
        return {"control_port": self.control_port, "data_port": self.data_port}


def launch(path, *options) -> subprocess.Popen:
    """Start a simulator process on free ports (read them with :func:`ready`)."""
    command = [sys.executable, "-m", "stem_explorer", "simulate", "merlin", str(path),
               "--control-port", "0", "--data-port", "0", *(str(o) for o in options)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def ready(proc: subprocess.Popen) -> SimProcess:
    """The simulator's ports, from the line it prints once it listens."""
    line = proc.stdout.readline()
    found = re.search(r"control port (\d+) data port (\d+)", line)
    if not found:
        proc.kill()
        raise AssertionError(f"the simulator did not start: {line!r} {proc.stderr.read()}")
    return SimProcess(proc, int(found[1]), int(found[2]))


def stop(proc: subprocess.Popen) -> None:
    """End a simulator process this test started."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    proc.stdout.close()
    proc.stderr.close()


@contextlib.contextmanager
def simulator(path, *options):
    """A simulator process serving ``path`` for the duration of the block."""
    proc = launch(path, *options)
    try:
        yield ready(proc)
    finally:
        stop(proc)


_MANY = """
import sys
from stem_explorer.live import MerlinSimulator
sims = [MerlinSimulator(path, control_port=0, data_port=0).start() for path in sys.argv[1:]]
for sim in sims:
    print(sim.path, "control port", sim.control_port, "data port", sim.data_port, flush=True)
sys.stdin.read()  # until the test closes the pipe
"""


@contextlib.contextmanager
def simulators(paths):
    """One process serving every file of ``paths`` on its own ports:
    ``{path: SimProcess}`` (one process start instead of one per file)."""
    proc = subprocess.Popen([sys.executable, "-c", _MANY, *map(str, paths)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield {path: ready(proc) for path in paths}
    finally:
        proc.stdin.close()
        stop(proc)

"""One Merlin simulator process serving many files, for the live acquisition tests
(:class:`stem_explorer.live.SimulatorProcess` serves one)."""

import contextlib
import re
import subprocess
import sys
from dataclasses import dataclass


@dataclass
class ServedFile:
    control_port: int
    data_port: int

    @property
    def ports(self) -> dict:
        return {"control_port": self.control_port, "data_port": self.data_port}


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
    ``{path: ServedFile}`` (one process start instead of one per file)."""
    proc = subprocess.Popen([sys.executable, "-c", _MANY, *map(str, paths)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        served = {}
        for path in paths:
            found = re.search(r"control port (\d+) data port (\d+)", proc.stdout.readline())
            assert found, proc.stderr.read()
            served[path] = ServedFile(int(found[1]), int(found[2]))
        yield served
    finally:
        proc.stdin.close()
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()

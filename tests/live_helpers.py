"""One Merlin simulator process serving many files, for the live acquisition tests
(:class:`stem_explorer.live.SimulatorProcess` serves one)."""

import contextlib
import os
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


_WRITER = """
import sys, time
source, folder, stride, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
gated = sys.argv[5] == "gated"
cuts = [int(c) for c in sys.argv[6:]]
raw = open(source, "rb").read()
for part, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
    if part and gated:
        sys.stdin.readline()  # the next file when the test says so
    with open(f"{folder}/acquisition_{part:03d}.mib", "wb") as f:
        for k in range(a, b):  # each frame in two writes: readers see half frames too
            record = raw[k * stride : (k + 1) * stride]
            f.write(record[: len(record) // 3])
            f.flush()
            time.sleep(delay / 2)
            f.write(record[len(record) // 3 :])
            f.flush()
            time.sleep(delay / 2)
"""


def slow_writer(source, folder, n_frames: int, cuts, delay: float, gated: bool = False) -> subprocess.Popen:
    """A process copying the frames of the .mib ``source`` into a series of files in
    ``folder`` (file ``i`` holds frames ``cuts[i]:cuts[i + 1]``), frame by frame, as a
    detector's software writes them: ``delay`` s a frame, each in two writes. ``gated``:
    each file after the first waits for a line on the process's stdin."""
    stride = os.path.getsize(source) // n_frames
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(source), str(folder), str(stride), str(delay),
                             "gated" if gated else "free", *map(str, cuts)], stdin=subprocess.PIPE, text=True)

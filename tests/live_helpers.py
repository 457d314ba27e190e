"""Helpers of the live acquisition tests: their two-worker cluster, one Merlin
simulator process serving many files (:class:`stem_explorer.live.SimulatorProcess`
serves one), and writers feeding watched folders slowly."""

import contextlib
import os
import re
import subprocess
import sys
from dataclasses import dataclass


def two_worker_client():
    """A client of a LocalCluster of two one-thread worker processes (a module-scoped
    fixture of the live test modules: ``client = pytest.fixture(scope="module")(two_worker_client)``)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0")
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


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


def write_arina_series(folder, frames, *, per_file: int, nav_shape, name: str = "scan"):
    """A DECTRIS ARINA acquisition of ``frames`` in ``folder``, laid out as the real
    ones in ``../shared/realdata/arina``: ``<name>_master.h5`` (``ntrigger`` x
    ``nimages`` = ``nav_shape``, external links to the data files) and data files
    ``<name>_data_NNNNNN.h5`` of ``per_file`` frames (``/entry/data/data``,
    bitshuffle-LZ4 chunks of one frame, ``image_nr_low`` / ``image_nr_high``).
    Returns the master's path and the data files' paths, in order."""
    import h5py
    import hdf5plugin
    import numpy as np

    paths = []
    for k, low in enumerate(range(0, len(frames), per_file), 1):
        path = folder / f"{name}_data_{k:06d}.h5"
        part = frames[low : low + per_file]
        with h5py.File(path, "w") as f:
            data = f.create_dataset("entry/data/data", data=part, chunks=(1,) + part.shape[1:],
                                    **hdf5plugin.Bitshuffle(cname="lz4"))
            data.attrs["image_nr_low"], data.attrs["image_nr_high"] = np.uint64(low + 1), np.uint64(low + len(part))
        paths.append(path)
    master = folder / f"{name}_master.h5"
    with h5py.File(master, "w") as f:
        for k, path in enumerate(paths, 1):
            f[f"entry/data/data_{k:06d}"] = h5py.ExternalLink(path.name, "/entry/data/data")
        spec = f.create_group("entry/instrument/detector/detectorSpecific")
        spec["ntrigger"], spec["nimages"] = np.uint64(nav_shape[0]), np.uint64(nav_shape[1])
    return master, paths


_ARINA_WRITER = """
import os, shutil, sys, time
mode, delay, folder, files = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:]
for k, source in enumerate(files):
    if k > 1 and mode == "gated":
        sys.stdin.readline()  # the next data file when the test says so
    target = os.path.join(folder, os.path.basename(source))
    raw = open(source, "rb").read()
    if mode == "in-place":  # written where it is read, in pieces, pausing at 3/4 for 4 delays
        with open(target, "wb") as f:
            for a, b in ((0, len(raw) // 2), (len(raw) // 2, 3 * len(raw) // 4), (3 * len(raw) // 4, len(raw))):
                f.write(raw[a:b])
                f.flush()
                time.sleep(delay * (4 if a else 1))
    else:  # under a temporary name, then renamed: a reader sees a whole file or none
        with open(target + ".part", "wb") as f:
            f.write(raw)
        os.replace(target + ".part", target)
    time.sleep(delay)
"""


def arina_writer(folder, files, *, mode: str, delay: float) -> subprocess.Popen:
    """A process copying ``files`` (an ARINA master, then its data files) into
    ``folder`` one by one, ``delay`` s apart, as a detector's file writer does:
    ``mode`` "renamed" (each written under a temporary name, then renamed), "gated"
    (the same, each data file after the first when a line arrives on its stdin), or
    "in-place" (written slowly under its own name)."""
    return subprocess.Popen([sys.executable, "-c", _ARINA_WRITER, mode, str(delay), str(folder), *map(str, files)],
                            stdin=subprocess.PIPE, text=True)


def write_de_movie(folder, frames, *, nav_shape=None, extended_header_bytes: int = 0, name: str = "scan"):
    """A Direct Electron movie ``<name>_movie.mrc`` of ``frames`` (mrcfile, with an
    extended header of ``extended_header_bytes``) in ``folder``, and, given
    ``nav_shape``, the ``<name>_info.txt`` of that raster scan as DE-Server writes it
    (``Key = value`` lines). Returns the movie's path."""
    import mrcfile
    import numpy as np

    path = folder / f"{name}_movie.mrc"
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(frames))
        if extended_header_bytes:
            mrc.set_extended_header(np.arange(extended_header_bytes, dtype=np.uint8))
    if nav_shape is not None:
        lines = {"Scan - Enable": "Enable", "Scan - Type": "Raster", "Scan - Size Y": nav_shape[0],
                 "Scan - Size X": nav_shape[1], "Scan - Camera Frames Per Point": 1, "Scan - Repeats": 1}
        (folder / f"{name}_info.txt").write_text("".join(f"{k:<64}= {v}\n" for k, v in lines.items()))
    return path


_DE_WRITER = """
import os, shutil, sys, time
movie, folder, delay, stop, gate = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
frame_bytes = int(sys.argv[6])
for side in sys.argv[7:]:  # DE-Server's side files first
    shutil.copy(side, folder)
raw = open(movie, "rb").read()
offset = 1024 + int.from_bytes(raw[92:96], "little")  # nsymbt: the extended header's size
with open(os.path.join(folder, os.path.basename(movie)), "wb") as f:
    f.write(raw[:offset])
    f.flush()
    for k in range(stop):
        if k == gate:
            sys.stdin.readline()  # the rest when the test says so
        record = raw[offset + k * frame_bytes : offset + (k + 1) * frame_bytes]
        for piece in (record[: len(record) // 3], record[len(record) // 3 :]):  # readers see part frames too
            f.write(piece)
            f.flush()
            time.sleep(delay / 2)
"""


def de_writer(movie, folder, *, frame_bytes: int, n_frames: int, delay: float, side_files=(), gate: int = -1,
              stop: int = None) -> subprocess.Popen:
    """A process writing the DE movie ``movie`` into ``folder`` as DE-Server does: its
    ``side_files`` (``_info.txt``...) copied first, then the MRC headers, then the
    frames one by one, ``delay`` s a frame, each in two writes; it stops after ``stop``
    frames (all ``n_frames`` by default), and waits for a line on its stdin before
    frame ``gate``."""
    stop = n_frames if stop is None else stop
    return subprocess.Popen([sys.executable, "-c", _DE_WRITER, str(movie), str(folder), str(delay), str(stop),
                             str(gate), str(frame_bytes), *map(str, side_files)], stdin=subprocess.PIPE, text=True)


def staged_de_movie(tmp_path, frames, nav_shape, *, delay: float, extended_header_bytes: int = 0, **writer_options):
    """A DE movie of ``frames`` with its _info.txt staged in ``tmp_path/"staged"``,
    and a :func:`de_writer` writing it into the empty ``tmp_path/"acq"``: ``(movie,
    watched folder, writer process)``."""
    staged, folder = tmp_path / "staged", tmp_path / "acq"
    staged.mkdir()
    folder.mkdir()
    movie = write_de_movie(staged, frames, nav_shape=nav_shape, extended_header_bytes=extended_header_bytes)
    writer = de_writer(movie, folder, frame_bytes=frames[0].nbytes, n_frames=len(frames), delay=delay,
                       side_files=[staged / "scan_info.txt"], **writer_options)
    return movie, folder, writer

"""``stem-explorer run -o OUT`` killed mid-job, with real processes: the command itself
(SIGKILL), one of its workers, or the scheduler it uses. No results file is ever left
half-written, and running the same command again computes only the partitions its
checkpoint lacks and ends equal to an uninterrupted run and to numpy.

The commands run ``tests/slow_cli.py``: the real ``stem-explorer`` main with a raw
reader that pauses per tile, so the job lasts long enough to act on mid-way."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

import _reference as ref
from stem_explorer import masks
from stem_explorer.engine.checkpoint import checkpoint_path
from stem_explorer.engine.checkpoint_file import read_checkpoint
from stem_explorer.results import Results

pytestmark = pytest.mark.cluster

DRIVER = Path(__file__).with_name("slow_cli.py")
NAV, SIG = (16, 16), (8, 8)
DISK = masks.Disk(4, 4, 2.5)
#: 8 frames a partition: 32 partitions, 0.2 s each (one tile) while the test acts
DELAY = 0.2
TIMEOUT = 600  # a loaded 2-core machine starts clusters slowly


@pytest.fixture
def scan(tmp_path):
    data = np.random.default_rng(3).integers(0, 4000, NAV + SIG).astype(np.uint16)
    path = tmp_path / "scan.raw"
    data.tofile(path)
    return path, data


def _command(data_path, out, *extra):
    return [
        sys.executable, str(DRIVER), "run", str(data_path), "--format", "slowraw", "--nav-shape", "16", "16",
        "--sig-shape", "8", "8", "--dtype", "uint16", "-a", "sum", "-a", "vd", "--disk", "4", "4", "2.5",
        "-a", "std", "-o", str(out), "--partition-bytes", "1K", "--checkpoint-every", "0.2", "-q", *extra,
    ]


def _env(delay):
    return {**os.environ, "STEM_TEST_TILE_DELAY": str(delay)}


def _start(command):
    # a session of its own: the command, its nannies and workers are one process group
    return subprocess.Popen(command, env=_env(DELAY), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _run(command):
    done = subprocess.run(command, env=_env(0), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    return done


def _wait_for(condition, process, what):
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the command ended (rc {process.returncode}) before {what}: {process.communicate()}")
        assert time.monotonic() < deadline, f"no {what} within {TIMEOUT} s"
        time.sleep(0.005)


def _kill(process):
    """SIGKILL the command and every process of its group, and wait until they are gone."""
    try:
        members = [process.pid] + [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:  # it ended by itself (and was reaped)
        members = []
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate()
    _, alive = psutil.wait_procs([psutil.Process(pid) for pid in members if psutil.pid_exists(pid)], timeout=60)
    assert not alive, alive


def _done(ck) -> int:
    return len(read_checkpoint(ck).done)


def _check_resumed(tmp_path, scan, out, uninterrupted=False):
    """Run the command again: it resumes, computes only what the checkpoint lacks,
    and its results equal numpy's (and, with ``uninterrupted``, a run's without
    interruption)."""
    path, data = scan
    ck = checkpoint_path(out)
    state = read_checkpoint(ck)
    k, n = len(state.done), len(state.layout)
    assert 0 < k < n
    rerun = _run(_command(path, out))
    assert f"resuming from {ck}: {k} of {n} partitions done" in rerun.stderr
    assert f"{n} partitions ({k} from the checkpoint, {n - k} computed)" in rerun.stdout
    assert not ck.exists()  # removed once the results were written
    resumed = Results.load(out)
    assert resumed.complete and resumed.filled.all()

    if uninterrupted:
        plain = tmp_path / "uninterrupted.h5"
        _run(_command(path, plain, "--checkpoint-every", "0"))
        reference = Results.load(plain)
        assert set(resumed) == set(reference)
        for key in resumed:  # the std frame's float moments merge in finishing order: equal to rounding
            compare = np.testing.assert_allclose if key.startswith("std/") else np.testing.assert_array_equal
            compare(resumed[key].data, reference[key].data)
    frames = ref.frames(data)
    np.testing.assert_array_equal(resumed["sum/frame"].data, frames.sum(axis=0))
    np.testing.assert_array_equal(resumed["vd/mask0"].data, ref.virtual_image(data, DISK.rasterize(SIG)))
    np.testing.assert_allclose(resumed["std/frame"].data, frames.std(axis=0), rtol=1e-9)


def _interrupted(tmp_path, scan, *options, meanwhile=lambda process, ck: None):
    """Start the command, wait for its first checkpoint, do ``meanwhile``, then
    SIGKILL it (if it still runs); returns the results path, where nothing is yet."""
    out = tmp_path / "out.h5"
    ck = checkpoint_path(out)
    process = _start(_command(scan[0], out, *options))
    try:
        _wait_for(ck.exists, process, "the first checkpoint")
        meanwhile(process, ck)
    finally:
        _kill(process)
    left = sorted(p.name for p in tmp_path.iterdir() if p.name not in ("scan.raw", ck.name))
    assert left == []  # no results file, no temporary of one
    return out


def test_a_run_killed_after_a_checkpoint_resumes_from_it(tmp_path, scan):
    out = _interrupted(tmp_path, scan, "--workers", "1")
    _check_resumed(tmp_path, scan, out, uninterrupted=True)


def _workers_of(process) -> list:
    """The dask workers under the command: each is forked by a nanny interpreter."""
    serving = [p for p in psutil.Process(process.pid).children(recursive=True) if "worker_processes import serve" in " ".join(p.cmdline())]
    nannies = {p.pid for p in serving}
    return [p for p in serving if p.ppid() in nannies]


def _lose_a_worker(process, ck):
    workers = _workers_of(process)
    assert len(workers) == 2, workers
    workers[0].send_signal(signal.SIGKILL)  # as the OOM killer would
    at_loss = _done(ck)
    _wait_for(lambda: _done(ck) > at_loss + 2, process, "checkpoints after the worker's loss")


def test_a_lost_worker_then_a_killed_run_resumes(tmp_path, scan):
    out = _interrupted(tmp_path, scan, "--workers", "2", meanwhile=_lose_a_worker)
    _check_resumed(tmp_path, scan, out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_lost_scheduler_leaves_no_results_file_and_the_run_resumes(tmp_path, scan):
    address = f"tcp://127.0.0.1:{_free_port()}"
    # the slow source's module must be importable there (dask pickles it by reference)
    tests = os.path.dirname(__file__)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")]))}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", address.rsplit(":", 1)[1], "--no-dashboard"], **quiet)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                               "--no-nanny", "--no-dashboard"], **quiet)
    ended = {}

    def lose_the_scheduler(process, ck):
        scheduler.kill()
        ended["stderr"] = process.communicate(timeout=TIMEOUT)[1]
        ended["rc"] = process.returncode

    try:
        out = _interrupted(tmp_path, scan, "--address", address, meanwhile=lose_the_scheduler)
    finally:
        for p in (worker, scheduler):
            p.kill()
            p.wait()
    assert ended["rc"] == 2
    assert f"the dask scheduler at {address} was lost" in ended["stderr"]
    assert f"the progress so far is saved in {checkpoint_path(out)}: run the same command again" in ended["stderr"]
    _check_resumed(tmp_path, scan, out)  # on an embedded cluster this time


def test_checkpoint_options_are_checked_before_any_work(tmp_path, scan, capsys):
    from stem_explorer.cli import main

    assert main(["run", str(scan[0]), "--format", "raw", "--nav-shape", "16", "16", "--sig-shape", "8", "8",
                 "--dtype", "uint16", "--checkpoint-every", "5"]) == 2
    assert "--checkpoint-every needs -o OUT" in capsys.readouterr().err
    for bad in ["-1", "nan", "1e9"]:
        with pytest.raises(SystemExit):
            main(["run", str(scan[0]), "-o", str(tmp_path / "o.h5"), "--checkpoint-every", bad])
        assert "--checkpoint-every must be a number of seconds above 0" in capsys.readouterr().err

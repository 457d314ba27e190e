"""The embedded cluster: started from plain scripts, its worker processes, and locked
to the user who started it (real subprocesses and a second OS user)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from other_user import other_user  # noqa: F401  (fixture)
from stem_explorer import Session, VirtualDetector, masks
from stem_explorer.errors import ClusterError
from stem_explorer.sample import make_sample

pytestmark = pytest.mark.cluster

#: The README's example, as a first script is written: no ``__main__`` guard.
SCRIPT = """\
import stem_explorer as se
from stem_explorer.masks import Disk

with se.Session("data.h5", n_workers=2) as session:
    job = session.run(se.VirtualDetector({"bf": Disk(7.5, 7.5, 4)}))
    for progress in job:
        pass
    results = job.result()
    results.save("results.h5")
print("bf", results["vd/bf"].data.shape)
"""


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return make_sample(tmp_path_factory.mktemp("sample") / "data.h5", nav_shape=(8, 8), sig_shape=(16, 16))


@pytest.fixture
def script_dir(tmp_path, sample) -> Path:
    shutil.copy(sample, tmp_path / "data.h5")
    (tmp_path / "example.py").write_text(SCRIPT)
    return tmp_path


def _run_python(args, cwd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300, **kwargs)


def test_script_without_main_guard_runs(script_dir):
    done = _run_python(["example.py"], script_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["bf (8, 8)"]
    assert "Traceback" not in done.stderr and "bootstrapping" not in done.stderr
    assert (script_dir / "results.h5").is_file()


def test_script_read_from_stdin_runs(script_dir):
    with open(script_dir / "example.py") as stdin:
        done = _run_python(["-"], script_dir, stdin=stdin)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == ["bf (8, 8)"]
    assert "Traceback" not in done.stderr


def test_worker_processes_end_with_a_killed_script(script_dir):
    (script_dir / "hold.py").write_text(textwrap.dedent("""\
        import json, time
        import psutil
        import stem_explorer as se
        session = se.Session("data.h5", n_workers=2)
        print(json.dumps([p.pid for p in psutil.Process().children(recursive=True)]), flush=True)
        time.sleep(600)
        """))
    script = subprocess.Popen([sys.executable, "hold.py"], cwd=script_dir, stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(script.stdout.readline())
    finally:
        script.kill()
        script.wait()
    assert len(pids) >= 4  # two nannies, two workers
    deadline = time.monotonic() + 60
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
        assert time.monotonic() < deadline, f"still running after their script was killed: {pids}"
        time.sleep(0.2)


def test_script_that_never_closes_its_session_exits_cleanly(script_dir):
    (script_dir / "open.py").write_text(textwrap.dedent("""\
        import json, psutil
        import stem_explorer as se
        session = se.Session("data.h5", n_workers=2)
        print(json.dumps([p.pid for p in psutil.Process().children(recursive=True)]))
        """))
    done = _run_python(["open.py"], script_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Exception" not in done.stderr, done.stderr[-3000:]
    pids = json.loads(done.stdout)
    deadline = time.monotonic() + 60
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
        assert time.monotonic() < deadline, f"still running after their script ended: {pids}"
        time.sleep(0.2)


def test_a_worker_that_cannot_start_is_a_clear_error_at_once(sample, monkeypatch):
    from stem_explorer.engine import interpreters

    monkeypatch.setattr(interpreters, "BOOTSTRAP", "import sys; sys.exit(3)")  # dies at start
    before = set(psutil.Process().children(recursive=True))
    start = time.monotonic()
    message = r"^an embedded worker did not start: its process exited \(exit code 3\); see its log"
    with pytest.raises(ClusterError, match=message):
        Session(sample, n_workers=2)
    assert time.monotonic() - start < 60
    assert set(psutil.Process().children(recursive=True)) <= before


def _listening_ports(process: psutil.Process) -> set:
    return {c.laddr.port for c in process.net_connections("inet") if c.status == psutil.CONN_LISTEN}


def test_other_users_cannot_use_the_embedded_cluster(tmp_path, sample, other_user):  # noqa: F811
    here = psutil.Process()
    before = _listening_ports(here)
    earlier = set(here.children(recursive=True))  # other tests' clusters are not this session's
    with Session(sample, n_workers=2) as session:
        # every port the session opened: the scheduler's (in this process) and its
        # workers' and nannies' (in processes of their own)
        ports = _listening_ports(here) - before
        for child in set(here.children(recursive=True)) - earlier:
            ports |= _listening_ports(child)
        assert len(ports) >= 5  # scheduler (+ its HTTP server), 2 nannies, 2 workers
        intruder = Path(other_user.home) / "intruder.py"
        shutil.copy(Path(__file__).with_name("intruder.py"), intruder)
        done = other_user.run([other_user.python, str(intruder), *map(str, sorted(ports))])
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout)
        assert report["uid"] == other_user.uid
        got_in = {k: v for k, v in report["attempts"].items() if "RAN CODE" in v or v == "HTTP 200"}
        assert not got_in, f"another user got in: {got_in}"
        # ... while the session's own client works on
        bf = session.compute(VirtualDetector({"bf": masks.Disk(7.5, 7.5, 4)}))["vd/bf"].data
        assert bf.shape == (8, 8) and np.isfinite(bf).all()
        assert session.client.scheduler.address.startswith("tls://127.0.0.1:")
        assert session.dashboard_link is None


def test_dashboard_on_request(sample):
    with Session(sample, n_workers=1, dashboard=True) as session:
        link = session.dashboard_link
        assert link.startswith("http://127.0.0.1:")
        import urllib.request

        with urllib.request.urlopen(link, timeout=30) as page:
            assert page.status == 200


def test_a_killed_worker_is_replaced(sample):
    with Session(sample, n_workers=2) as session:
        pids = session.client.run(os.getpid)
        victim = sorted(pids.values())[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while True:
            now = session.client.run(os.getpid, on_error="ignore")  # the victim, until it is gone
            if len(now) == 2 and victim not in now.values():
                break
            assert time.monotonic() < deadline, f"worker {victim} was not replaced: {now}"
            time.sleep(0.2)
        assert session.compute(VirtualDetector(masks.Disk(7.5, 7.5, 4)))["vd/mask0"].data.shape == (8, 8)

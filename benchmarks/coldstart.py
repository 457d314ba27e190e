"""Cold start: a fresh Python process imports stem_explorer, starts a Session
(embedded LocalCluster) and computes one virtual bright-field image.

Run as ``python -m benchmarks.coldstart SPEC_JSON`` by :func:`measure`; the child
prints one JSON line with its own breakdown (seconds since its first statement),
and the parent adds the wall time from spawning the process to reading that line,
which includes the interpreter's own start-up. The page cache is warm (the same file
was just benchmarked); what is cold is the process: imports, cluster, JIT caches.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def child(spec: dict) -> dict:
    """In the fresh process: import, Session, first partial and final result."""
    import stem_explorer as se

    t_import = time.perf_counter() - _T0
    from .data import BenchData
    from .workloads import disk_mask

    data = BenchData(**{**spec["data"], "path": Path(spec["data"]["path"])})
    session = se.Session(data.open(), n_workers=spec["workers"])
    t_session = time.perf_counter() - _T0
    job = session.run(se.VirtualDetector({"bf": disk_mask(data.sig_shape)}))
    next(iter(job))
    t_first = time.perf_counter() - _T0
    job.result()
    t_result = time.perf_counter() - _T0
    out = {"import_s": t_import, "session_s": t_session, "first_partial_s": t_first, "result_s": t_result}
    print(json.dumps(out), flush=True)
    session.close()
    return out


def measure(data, workers: int, timeout: float = 120.0) -> dict:
    """Spawn the child on ``data`` and return its breakdown plus ``wall_s`` (spawn
    to the result line)."""
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    spec = {"data": {**data.__dict__, "path": str(data.path)}, "workers": workers}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.coldstart", json.dumps(spec)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=root,
    )
    line = proc.stdout.readline()
    wall = time.perf_counter() - t0
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if not line.strip():
        raise RuntimeError(f"cold-start child failed (exit {proc.returncode}): {err.strip()[-2000:]}")
    return {**json.loads(line), "wall_s": wall}


if __name__ == "__main__":
    child(json.loads(sys.argv[1]))

"""Batch throughput (issue 16): many files through ``stem_explorer.batch`` on one warm
embedded LocalCluster, a virtual detector (a disk) and the sum frame on each.

``python -m benchmarks --batch`` (options: ``python -m benchmarks --batch --help``).

* **big files** (default 20 of 256 MiB), in ``--repeat`` rounds, each of two passes
  over the same files on the same cluster, back to back: the *single-file* pass runs
  one job per file (``Session.run``, warm, split over the workers; no coarse preview
  and no reduced copy, as in a batch), one file after the other, and gives the
  single-file throughput (bytes over the jobs' summed seconds); then the batch of
  the same files. A round's ratio compares two passes a few seconds apart, under
  about the same load; the table gives the median ratio and the range of the rounds;
* **small files** (default 1,000 of 4 MiB): the whole batch's wall time. The per-file
  fixed overhead is what the batch takes beyond streaming the bytes at the single-file
  rate (the median of the rounds), per file: ``(wall - bytes / single GB/s) / files``;
  also files/s and GB/s, and the CPU time per file of this process (the scheduler,
  the client, the batch's threads: the fixed cost, one interpreter's) and of the
  workers, which a loaded machine inflates far less than the wall time.

First a job and a batch of two files run as a warm-up: what a process pays once
(the kernels, importing the recipe's schema checker) is not a per-file cost; the
warm-up batch's wall time is reported.

Issue 16's targets: a fixed overhead <= 30 ms per file, and big files at >= 80% of
the single-file throughput. Every file is a ``.npy`` of uint16 frames, written once
(the page cache holds them: both sides of each ratio read warm data). Each batch
writes its results to a fresh folder, so nothing is kept from an earlier run.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from . import data, report, timing
from .runner import REPO_ROOT, _run_record

TARGET_OVERHEAD_S = 0.030
TARGET_FRACTION = 0.80
SIG = (64, 64)  # 8 KiB frames


def _log(message: str) -> None:
    print(f"[bench-batch] {message}", file=sys.stderr, flush=True)


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=str(REPO_ROOT / "bench_data"), help="folder of the files (created if absent)")
    p.add_argument("--small", action="store_true", help="a quick run: 100 files of 4 MiB and 4 of 64 MiB")
    p.add_argument("--files", type=data.at_least_one, help="small files (default 1000; --small: 100)")
    p.add_argument("--file-mib", type=data.at_least_one, default=4, help="MiB per small file (default 4)")
    p.add_argument("--big-files", type=data.at_least_one, help="big files (default 20; --small: 4)")
    p.add_argument("--big-mib", type=data.at_least_one, help="MiB per big file (default 256; --small: 64)")
    p.add_argument("--repeat", type=data.at_least_one, default=3,
                   help="rounds of a single-file pass and a batch over the big files (after one warm-up job)")
    p.add_argument("--workers", type=data.at_least_one, default=2, help="worker processes of the embedded LocalCluster")
    p.add_argument("--concurrency", type=data.at_least_one, help="inputs in flight (default: the batch's own)")
    p.add_argument("--json", metavar="FILE", help="also write the records as JSON lines to FILE")
    p.add_argument("--format", choices=["table", "json"], default="table", help="stdout: table or JSON lines")
    return p


def analyses() -> list:
    import stem_explorer as se

    return [se.VirtualDetector({"bf": se.masks.Disk(SIG[0] / 2, SIG[1] / 2, SIG[0] / 8)}), se.SumFrame()]


def ensure_files(folder: Path, n: int, mib: int) -> list[Path]:
    """``n`` files of ``mib`` MiB of uint16 frames (one random block repeated), written once."""
    frame_bytes = SIG[0] * SIG[1] * 2
    frames = mib * 2**20 // frame_bytes
    folder = folder / f"batch_{mib}mib"
    folder.mkdir(parents=True, exist_ok=True)
    block = np.random.default_rng(16).integers(0, 4096, (min(frames, 256),) + SIG).astype(np.uint16)
    paths = []
    for i in range(n):
        path = folder / f"scan_{i:05d}.npy"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint16, shape=(frames,) + SIG)
            for start in range(0, frames, len(block)):
                array[start : start + len(block)] = block[: frames - start]
            array.flush()
            del array
            tmp.replace(path)
        paths.append(path)
    return paths


def _single_file_pass(client, paths: list) -> dict:
    """One job per file, one file after the other: bytes over the jobs' summed seconds.
    The job a batch runs for a big file: split over the workers, without the coarse
    preview and the reduced copy a session adds for the Explorer."""
    seconds = 0.0
    for path in paths:
        with _session(path, client) as session:
            seconds += _timed(session)
    nbytes = sum(os.path.getsize(p) for p in paths)
    return {"seconds": seconds, "bytes": nbytes, "gbps": nbytes / seconds / 1e9}


def _session(path: Path, client):
    from stem_explorer import Session

    return Session(path, client=client, reduced_copy_bytes=0)


def _timed(session) -> float:
    t0 = time.perf_counter()
    session.run(*analyses(), preview_stride=0).result()
    return time.perf_counter() - t0


def _cpu_seconds() -> float:
    """User and system CPU seconds of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _workers_cpu_seconds(client) -> float:
    def cpu_seconds() -> float:  # nested: shipped by value (the workers may not import benchmarks)
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    return sum(client.run(cpu_seconds).values())


def _batch(client, paths: list, out: Path, concurrency) -> dict:
    from stem_explorer.batch.run import batch

    shutil.rmtree(out, ignore_errors=True)
    workers_cpu = _workers_cpu_seconds(client)
    cpu = _cpu_seconds()
    t0 = time.perf_counter()
    result = batch(paths, analyses(), out, client=client, progress=False, concurrency=concurrency)
    wall = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu
    workers_cpu = _workers_cpu_seconds(client) - workers_cpu
    if not result.ok:
        raise RuntimeError(f"the batch failed: {[r for r in result.rows if r.get('status') != 'done'][:2]}")
    nbytes = sum(int(r["bytes"]) for r in result.rows)
    shutil.rmtree(out, ignore_errors=True)
    return {"files": len(paths), "bytes": nbytes, "wall_s": wall, "files_per_s": len(paths) / wall,
            "gbps": nbytes / wall / 1e9, "client_cpu_s": cpu / len(paths), "workers_cpu_s": workers_cpu / len(paths)}


def measure(args) -> list[dict]:
    from distributed import Client

    from stem_explorer.engine.cluster import start_local_cluster

    n_small = args.files or (100 if args.small else 1000)
    n_big = args.big_files or (4 if args.small else 20)
    big_mib = args.big_mib or (64 if args.small else 256)
    folder = Path(args.dir)
    _log(f"files: {n_small} of {args.file_mib} MiB, {n_big} of {big_mib} MiB in {folder}")
    small = ensure_files(folder, n_small, args.file_mib)
    big = ensure_files(folder, n_big, big_mib)
    records = [{**_run_record(argparse.Namespace(repeat=args.repeat, small=args.small, workers=args.workers)),
                "benchmark": "batch", "load_average": os.getloadavg()}]
    out = folder / "batch_results"
    with start_local_cluster(args.workers) as cluster, Client(cluster) as client:
        _log("warm-up job (kernels on the workers) and batch")
        with _session(big[0], client) as session:
            _timed(session)
        warmup = _batch(client, small[:2], out, args.concurrency)
        _log(f"warm-up batch of 2 files: {warmup['wall_s']:.2f} s (imports, once per process)")
        records.append({"kind": "warm-up", "files": 2, "wall_s": warmup["wall_s"]})
        rounds = []
        for k in range(args.repeat):
            _log(f"round {k + 1} of {args.repeat}: {n_big} big files one job at a time, then as a batch")
            single = _single_file_pass(client, big)
            r = _batch(client, big, out, args.concurrency)
            rounds.append({"single_gbps": single["gbps"], "single_s": single["seconds"], **r,
                           "fraction": r["gbps"] / single["gbps"], "load_average": os.getloadavg()[0]})
        limit = statistics.median(r["single_gbps"] for r in rounds)
        records.append({"kind": "batch", "case": "single file", "files": n_big, "bytes": rounds[0]["bytes"],
                        "gbps": limit, "wall_s": statistics.median(r["single_s"] for r in rounds),
                        "gbps_range": _range(rounds, "single_gbps")})
        _log(f"{n_small} small files")
        r = _batch(client, small, out, args.concurrency)
        overhead = (r["wall_s"] - r["bytes"] / (limit * 1e9)) / r["files"]
        records.append({"kind": "batch", "case": "small files", **r, "overhead_s": overhead,
                        "target": f"<= {TARGET_OVERHEAD_S * 1e3:.0f} ms per file", "pass": overhead <= TARGET_OVERHEAD_S})
        fraction = statistics.median(r["fraction"] for r in rounds)
        big_record = {key: statistics.median(r[key] for r in rounds) for key in _BATCH_FIGURES}
        records.append({"kind": "batch", "case": "big files", "files": n_big, "bytes": rounds[0]["bytes"], **big_record,
                        "fraction": fraction, "fraction_range": _range(rounds, "fraction"), "rounds": rounds,
                        "target": f">= {TARGET_FRACTION:.0%} of single file", "pass": fraction >= TARGET_FRACTION})
    return records


#: a batch's figures, as medians over the rounds for the big files
_BATCH_FIGURES = ("wall_s", "files_per_s", "gbps", "client_cpu_s", "workers_cpu_s")


def _range(rounds: list, key: str) -> list:
    return [min(r[key] for r in rounds), max(r[key] for r in rounds)]


def table(records: list[dict]) -> str:
    run = records[0]
    lines = [
        f"batch on {run['cores']} cores ({run['workers']} workers), load average {run['load_average'][0]:.1f} at the "
        f"start; virtual detector (disk) + sum frame per file, warm page cache; single file: one job per big file, "
        f"one after the other; big files: median of {run['repeat']} rounds (range in brackets)",
        "",
        "| case | files | MiB each | wall s | files/s | GB/s | fixed overhead ms/file | CPU ms/file: client, workers "
        "| of single file | target | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in records if r.get("kind") == "batch"):
        wall = r.get("wall_s", r.get("median_s"))
        overhead = f"{r['overhead_s'] * 1e3:.1f}" if "overhead_s" in r else "-"
        fraction = "-"
        if "fraction" in r:
            lo, hi = r["fraction_range"]
            fraction = f"{r['fraction']:.0%} ({lo:.0%} to {hi:.0%})"
        cpu = f"{r['client_cpu_s'] * 1e3:.1f}, {r['workers_cpu_s'] * 1e3:.1f}" if "client_cpu_s" in r else "-"
        met = {True: "yes", False: "NO"}.get(r.get("pass"), "-")
        lines.append(
            f"| {r['case']} | {r['files']} | {r['bytes'] / r['files'] / 2**20:.0f} | {wall:.2f} "
            f"| {r['files'] / wall:.1f} | {r['gbps']:.2f} | {overhead} | {cpu} | {fraction} | {r.get('target', '-')} "
            f"| {met} |"
        )
    return "\n".join(lines)


def main(argv=None, prog: str = "python -m benchmarks --batch") -> int:
    """``python -m benchmarks --batch``: measure and print the table (or JSON lines)."""
    return report.side_main(build_parser, measure, table, argv, prog)

"""The benchmark's entry point: options, the order of measurements, the output.

For each data set (created if absent): the plain-read limit on that file, then every
workload on it (one warm-up run, ``--repeat`` timed runs), all in one warm embedded
LocalCluster; then the first-partial-result latency on the warm cluster and, after
that cluster has stopped, one cold start in a fresh process.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import platform
import sys
import time
from pathlib import Path

from . import coldstart, data, libertem_ref, plainread, report, timing
from .workloads import HDF5_FRACTION, all_workloads, disk_mask

#: The repository root (this package's parent folder).
REPO_ROOT = Path(__file__).resolve().parents[1]

#: Latency targets of issue 4, seconds.
FIRST_PARTIAL_TARGET_S = 0.05
COLD_START_TARGET_S = 3.0


def build_parser(prog: str = "python -m benchmarks") -> argparse.ArgumentParser:
    """Options of the benchmark (shared by ``python -m benchmarks`` and ``stem-explorer bench``)."""
    p = argparse.ArgumentParser(prog=prog, description="stem_explorer benchmark suite (issue 4): "
                                "workloads vs the plain-read limit, latency, cold start.")
    p.add_argument("--dir", default=str(REPO_ROOT / "bench_data"), help="folder of the data sets (created if absent)")
    p.add_argument("--small", action="store_true", help="64 x 64 scan instead of 256 x 256 (a quick run)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per workload, after one warm-up")
    p.add_argument("--workers", type=int, default=2, help="worker processes of the embedded LocalCluster")
    p.add_argument("--json", metavar="FILE", help="also write the JSON lines to FILE")
    p.add_argument("--format", choices=["table", "json"], default="table", help="stdout: table or JSON lines")
    p.add_argument("--no-libertem", action="store_true", help="skip the LiberTEM column even when installed")
    p.add_argument("--no-cold-start", action="store_true", help="skip the cold-start measurement")
    p.add_argument("--hdfs", action="store_true", help="run the HDFS locality benchmark instead "
                   "(benchmarks/hdfs.py; its options: --hdfs --help)")
    p.add_argument("--formats", action="store_true", help="run the detector-format throughput benchmark "
                   "instead (benchmarks/formats.py; its options: --formats --help)")
    p.add_argument("--bigdata", action="store_true", help="run the larger-than-memory benchmark instead "
                   "(benchmarks/bigdata.py, a 40 GiB file by default; its options: --bigdata --help)")
    p.add_argument("--compression", action="store_true", help="run the compression survey instead: every "
                   "codec vs the raw files, cold (benchmarks/compression.py; its options: --compression --help)")
    p.add_argument("--kernels", action="store_true", help="run the mask-kernel calibration instead: each "
                   "path on one core (benchmarks/kernels.py; its options: --kernels --help)")
    p.add_argument("--descan", action="store_true", help="run the descan-correction benchmark instead: disk "
                   "and annulus with and without a per-position shift (benchmarks/descan.py; its options: --descan --help)")
    p.add_argument("--live", action="store_true", help="run the live acquisition benchmark instead: Merlin "
                   "simulator -> receiver -> session (benchmarks/live.py; its options: --live --help)")
    p.add_argument("--batch", action="store_true", help="run the batch benchmark instead: many small files and a few "
                   "big ones vs one job (benchmarks/batch.py; its options: --batch --help)")
    p.add_argument("--monitoring", action="store_true", help="run the monitoring overhead benchmark instead: "
                   "jobs metered and not (benchmarks/monitoring.py; its options: --monitoring --help)")
    return p


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _target(workload, gbps: float, done: dict) -> dict:
    """Target fields of a workload record; relative targets use earlier rows."""
    if workload.relative_to:
        base = done[workload.relative_to]["gbps"]
        goal = HDF5_FRACTION * base
        text = f">= {HDF5_FRACTION:.0%} of raw ({goal:.2f} GB/s)"
    else:
        goal = workload.target_gbps
        text = f">= {goal:g} GB/s"
    return {"target_gbps": goal, "target": text, "pass": gbps >= goal}


def _libertem_gbps(column, workload, bench_data, repeat: int, skipped: bool):
    """The LiberTEM column's value for one workload: GB/s, or why there is none."""
    if column is None:
        return "skipped" if skipped else libertem_ref.NOT_INSTALLED
    try:
        seconds = timing.repeat(column.timer(workload.key, bench_data), repeat)
    except Exception as exc:  # a LiberTEM API difference must not stop our own rows
        return f"error: {type(exc).__name__}: {exc}"[:200]
    return timing.summarise(seconds, bench_data.nbytes)["gbps"]


def _workload_record(session, workload, bench_data, plain: dict, args, done: dict, column) -> dict:
    """Time one workload and build its record."""
    build = functools.partial(workload.build, bench_data.sig_shape)
    seconds = timing.repeat(functools.partial(timing.time_job, session, build), args.repeat, dtype=bench_data.dtype)
    stats = timing.summarise(seconds, bench_data.nbytes)
    read = plain["preadv"]["median_gbps"]
    record = {
        "kind": "workload", "workload": workload.id, "name": workload.name,
        "format": bench_data.format, "dtype": bench_data.dtype, "file": str(bench_data.path),
        "nbytes": bench_data.nbytes, "workers": args.workers, **stats,
        "plain_read_gbps": read, "mmap_sum_gbps": plain["mmap_sum"]["median_gbps"],
        "ratio": stats["gbps"] / read, **_target(workload, stats["gbps"], done),
    }
    record["libertem_gbps"] = _libertem_gbps(column, workload, bench_data, args.repeat, args.no_libertem)
    return record


def _first_partial_record(session, bench_data, repeat: int) -> dict:
    """Latency from ``run`` to the first Progress, one bright-field disk, warm cluster."""
    import stem_explorer as se

    def build():
        return [se.VirtualDetector({"bf": disk_mask(bench_data.sig_shape)})]

    seconds = timing.repeat(functools.partial(timing.time_first_partial, session, build), repeat, dtype=bench_data.dtype)
    stats = timing.summarise(seconds, bench_data.nbytes)
    return {
        "kind": "first_partial", "workload": f"disk/{bench_data.key}", "runs": stats["runs"],
        "median_s": stats["median_s"], "min_s": stats["min_s"], "max_s": stats["max_s"],
        "target_s": FIRST_PARTIAL_TARGET_S, "pass": stats["median_s"] <= FIRST_PARTIAL_TARGET_S,
    }


def _cold_start_record(bench_data, workers: int) -> dict:
    """One fresh process: import + Session + first result."""
    figures = coldstart.measure(bench_data, workers)
    return {
        "kind": "cold_start", "workload": f"disk/{bench_data.key}", **figures,
        "target_s": COLD_START_TARGET_S, "pass": figures["wall_s"] <= COLD_START_TARGET_S,
    }


def _run_record(args) -> dict:
    """What was measured where."""
    import numpy

    import stem_explorer

    return {
        "kind": "run", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "workers": getattr(args, "workers", None),
        "repeat": args.repeat, "small": args.small, "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(), "numpy": numpy.__version__,
        "stem_explorer": stem_explorer.__version__, "machine": platform.machine(),
    }


def measure(args) -> list[dict]:
    """Every measurement of one benchmark run, as records (dicts)."""
    from distributed import Client

    from stem_explorer import Session
    from stem_explorer.engine.cluster import start_local_cluster

    sets = data.ensure(args.dir, args.small, _log)
    records = [_run_record(args)]
    done: dict = {}
    column = libertem_ref.open_column(args.workers, not args.no_libertem)
    _log(f"starting a LocalCluster with {args.workers} workers")
    with start_local_cluster(args.workers) as cluster, Client(cluster) as client:
        for bench_data in sets.values():
            _log(f"plain read of {bench_data.path.name}")
            plain = plainread.measure(client, bench_data.path, bench_data.dtype, args.repeat)
            records.append({"kind": "plain_read", **bench_data.describe(), **plain})
            with Session(bench_data.open(), client=client) as session:
                for workload in (w for w in all_workloads() if w.data == bench_data.key):
                    _log(f"{workload.id}")
                    done[workload.id] = _workload_record(session, workload, bench_data, plain, args, done, column)
                    records.append(done[workload.id])
                if bench_data.key == "raw-uint16":
                    _log("first partial result latency")
                    records.append(_first_partial_record(session, bench_data, args.repeat))
    if column is not None:
        column.close()
    if not args.no_cold_start:
        _log("cold start (fresh process)")
        records.append(_cold_start_record(sets["raw-uint16"], args.workers))
    return records


#: The flags that run a side benchmark instead, and its module.
SIDE_BENCHMARKS = {"--hdfs": "hdfs", "--formats": "formats", "--bigdata": "bigdata", "--kernels": "kernels",
                   "--compression": "compression", "--live": "live", "--descan": "descan", "--batch": "batch",
                   "--monitoring": "monitoring"}


def main(argv=None, prog: str = "python -m benchmarks") -> int:
    """Run the benchmark with command-line ``argv``; print the table or JSON lines."""
    argv = sys.argv[1:] if argv is None else list(argv)
    for flag, name in SIDE_BENCHMARKS.items():
        if flag in argv:
            module = importlib.import_module(f".{name}", __package__)
            return module.main([a for a in argv if a != flag], prog=f"{prog} {flag}")
    args = build_parser(prog).parse_args(argv)
    if args.repeat < 1 or args.workers < 1:
        print(f"{prog}: error: --repeat and --workers must be >= 1", file=sys.stderr)
        return 2
    records = measure(args)
    if args.json:
        with open(args.json, "w") as out:
            report.write_json_lines(records, out)
    if args.format == "json":
        report.write_json_lines(records, sys.stdout)
    else:
        print(report.table(r for r in records if r["kind"] == "workload"))
        print(report.reference_lines(records))
    return 0

"""What resource monitoring costs: jobs with each task metered against the same jobs
without, in one session, and the meter's own time per task.

``python -m benchmarks --monitoring`` (options: ``python -m benchmarks --monitoring
--help``). The main suite's sum frame and one disk on its raw uint16 file run in an
embedded cluster, in small partitions (many tasks, so a per-task cost shows), with
the workers' :class:`stem_explorer.engine.monitor.TaskMeter` in place ("on") and
swapped for one that only counts bytes ("off"), alternating run by run so both see the
same load. The limit is the "off" run of the same workload; the ratio on/off is the
cost. The meter's own time per task is measured inside a worker (a task's meter with
one tile, :data:`METER_TILES_PER_TASK` tiles per task as the small partitions have).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time

from . import data, report, timing
from .workloads import all_workloads

#: The workloads (keys of :func:`benchmarks.workloads.all_workloads` on raw uint16).
WORKLOADS = ("sum", "disk")
#: Data per task: small, so the per-task cost is as large a share as it gets.
PARTITION_BYTES = 4 * 2**20
#: Tiles per task when timing the meter alone (a 4 MiB partition in 32 MiB tiles: one).
METER_TILES_PER_TASK = 1


def _log(message: str) -> None:
    print(f"[bench-monitoring] {message}", file=sys.stderr, flush=True)


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    data.add_data_options(p)
    p.add_argument("--workers", type=data.at_least_one, default=2, help="worker processes of the embedded cluster")
    p.add_argument("--json", metavar="FILE", help="also write the records as JSON lines to FILE")
    return p


class _BytesOnly:
    """The "off" meter: counts the bytes (run_partition reports them), measures nothing."""

    def __init__(self):
        self.bytes_read = 0

    def tile(self, nbytes: int) -> None:
        self.bytes_read += nbytes

    def finish(self):
        return None


def _use_meter(on: bool) -> None:
    """In a worker: run_partition's meter, the real one or :class:`_BytesOnly`."""
    from stem_explorer.engine import monitor, tasks

    tasks.TaskMeter = monitor.TaskMeter if on else _BytesOnly


def _meter_seconds(n: int) -> float:
    """In a worker: seconds of one task's metering (start, tiles, finish), median of
    ``n``."""
    from stem_explorer.engine.monitor import TaskMeter

    seconds = []
    for _ in range(n):
        t0 = time.perf_counter()
        meter = TaskMeter()
        for _tile in range(METER_TILES_PER_TASK):
            meter.tile(PARTITION_BYTES)
        meter.finish()
        seconds.append(time.perf_counter() - t0)
    return statistics.median(seconds)


def _check_switch(session, build) -> None:
    """The "off" runs really run unmetered (their jobs have no CPU seconds), the "on"
    runs metered."""
    for on in (True, False):
        session.client.run(_use_meter, on)
        job = session.run(*build())
        job.result()
        if (job.stats.cpu_seconds > 0) != on:
            raise RuntimeError(f"the workers' meter is not {'on' if on else 'off'} as asked: the comparison is void")


def measure(args) -> list[dict]:
    import cloudpickle

    from stem_explorer import Session

    from .runner import _run_record

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import benchmarks
    bench = data.ensure(args.dir, args.small, _log, keys=("raw-uint16",))["raw-uint16"]
    workloads = {w.key: w for w in all_workloads() if w.data == "raw-uint16"}
    records = [{**_run_record(args), "benchmark": "monitoring", "partition_bytes": PARTITION_BYTES}]
    with Session(bench.open(), n_workers=args.workers, partition_bytes=PARTITION_BYTES) as session:
        client, ds = session.client, session.dataset
        for key in WORKLOADS:
            build = functools.partial(workloads[key].build, ds.sig_shape)
            _check_switch(session, build)
            runs = {True: [], False: []}
            for i in range(args.repeat + 1):  # the first round warms up
                for on in (True, False) if i % 2 else (False, True):
                    client.run(_use_meter, on)
                    seconds = timing.time_job(session, build)
                    if i:
                        runs[on].append(seconds)
            _log(f"{key}: on {statistics.median(runs[True]):.3f} s, off {statistics.median(runs[False]):.3f} s")
            on, off = (timing.summarise(runs[flag], ds.nbytes) for flag in (True, False))
            records.append({"kind": "monitoring", "workload": key, "tasks": len(ds.partitions(args.workers, PARTITION_BYTES)),
                            "on": on, "off": off, "ratio": on["median_s"] / off["median_s"]})
        client.run(_use_meter, True)
        meter = client.submit(_meter_seconds, 2000, pure=False).result()
        records.append({"kind": "meter", "tiles": METER_TILES_PER_TASK, "median_us": meter * 1e6})
    return records


def table(records: list[dict]) -> str:
    """The rows as a Markdown table, and the meter's own time."""
    lines = ["| workload | tasks | metered s (median) | not metered s (median) | ratio |", "|---|---|---|---|---|"]
    for r in (r for r in records if r["kind"] == "monitoring"):
        lines.append(f"| {r['workload']} | {r['tasks']} | {r['on']['median_s']:.3f} | {r['off']['median_s']:.3f} | "
                     f"{r['ratio']:.3f} |")
    meter = next(r for r in records if r["kind"] == "meter")
    lines.append(f"\nmeter alone: {meter['median_us']:.1f} us a task ({meter['tiles']} tile)")
    return "\n".join(lines)


def main(argv=None, prog: str = "python -m benchmarks --monitoring") -> int:
    """``python -m benchmarks --monitoring``: measure and print the table (or JSON lines)."""
    return report.side_main(build_parser, measure, table, argv, prog)

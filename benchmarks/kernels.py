"""Mask-kernel calibration: every path of the mask product on one core.

``python -m benchmarks --kernels`` (options: ``python -m benchmarks --kernels --help``).
The main suite's disk, annulus and 16 rings (:mod:`benchmarks.workloads`) run on its
raw uint16 and float32 files through each path of ``engine.ops.MaskProduct`` in turn
(``kernel=`` spans, columns, sparse, dense), in this process with one BLAS thread:
every partition one after the other (``engine.run_local``), so the figures are one
core's, read through the page cache. Each row also names the path ``kernel='auto'``
picks, so a glance shows whether the cost model picks the fastest. The model's
constants in ``engine/ops.py`` are fitted to these figures (``docs/performance.md``,
"Choosing the mask kernel").
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

from . import data, report, timing
from .workloads import all_workloads

#: The mask workloads (keys of :func:`benchmarks.workloads.all_workloads`).
MASKS = ("disk", "annulus", "rings16")
#: The forced paths of ``MaskProduct``.
PATHS = ("spans", "columns", "sparse", "dense")
#: The data sets (keys of :func:`benchmarks.data.plan`).
DATA = ("raw-uint16", "raw-float32")


def _log(message: str) -> None:
    print(f"[bench-kernels] {message}", file=sys.stderr, flush=True)


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    data.add_data_options(p)
    p.add_argument("--only", nargs="+", choices=PATHS, metavar="PATH", help=f"paths to run ({' '.join(PATHS)})")
    p.add_argument("--json", metavar="FILE", help="also write the records as JSON lines to FILE")
    return p


def _time_pass(ds, plan) -> float:
    """Seconds of one pass over every partition of ``ds`` in this process."""
    from stem_explorer.engine import run_local

    t0 = time.perf_counter()
    run_local(ds.partitions(1), plan)
    return time.perf_counter() - t0


def measure(args) -> list[dict]:
    """One record per (data set, mask, path)."""
    from threadpoolctl import threadpool_limits

    from stem_explorer.analyses import build_plan

    from .runner import _run_record

    sets = data.ensure(args.dir, args.small, _log, keys=DATA)
    workloads = {(w.data, w.key): w for w in all_workloads()}
    records = [{**_run_record(args), "benchmark": "kernels", "threads": 1}]
    with threadpool_limits(1):
        for key in DATA:
            ds = sets[key].open()
            for mask in MASKS:
                analyses = workloads[(key, mask)].build(ds.sig_shape)
                auto = build_plan(analyses, ds)[0].ops[-1].kernel
                for path in args.only or PATHS:
                    _log(f"{mask} on {key} through {path}")
                    plan, _ = build_plan(analyses, ds, kernel=path)
                    seconds = timing.repeat(functools.partial(_time_pass, ds, plan), args.repeat)
                    stats = timing.summarise(seconds, ds.nbytes)
                    records.append({
                        "kind": "kernel", "data": key, "dtype": ds.dtype.str, "mask": mask, "path": path,
                        "kernel": plan.ops[-1].kernel, "auto": auto, **stats,
                        "ns_per_frame": stats["median_s"] / ds.n_frames * 1e9,
                    })
    return records


def table(records: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = ["| data | mask | path | GB/s (one core) | ns a frame | auto picks |", "|---|---|---|---|---|---|"]
    for r in (r for r in records if r["kind"] == "kernel"):
        lines.append(f"| {r['data']} | {r['mask']} | {r['kernel']} | {r['gbps']:.2f} | {r['ns_per_frame']:,.0f} | "
                     f"{r['auto']} |")
    return "\n".join(lines)


def main(argv=None, prog: str = "python -m benchmarks --kernels") -> int:
    """``python -m benchmarks --kernels``: measure and print the table (or JSON lines)."""
    return report.side_main(build_parser, measure, table, argv, prog)

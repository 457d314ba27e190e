"""HDFS benchmark: a virtual bright field read from HDFS with locality, against the
same partitions read from local files, in one run on one cluster.

``python -m benchmarks --hdfs`` (options: ``python -m benchmarks --hdfs --help``).
It starts the test harness's real HDFS (``scripts/hdfs/minicluster.py``): one
DataNode and one dask worker per node on 127.0.0.2, 127.0.0.3, ..., replication 1 by
default so that every partition is local to exactly one worker and placement is what
decides. The raw uint16 file of the main benchmark (``benchmarks/data.py``) is
ingested twice with the same partition files, to HDFS and to a local folder (the
local copy is kept and reused: re-running the ingestion skips it); then the disk runs
on each, one warm-up and ``--repeat`` timed runs, and a third time on HDFS with
short-circuit reads off (every byte through WebHDFS).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import time
from pathlib import Path

from . import data, report, timing
from .workloads import disk_mask

REPO_ROOT = Path(__file__).resolve().parents[1]

#: Target of the issue: HDFS with locality at this fraction of the local-file figure.
TARGET_FRACTION = 0.7


def _log(message: str) -> None:
    print(f"[bench-hdfs] {message}", file=sys.stderr, flush=True)


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    data.add_data_options(p)
    p.add_argument("--nodes", type=int, default=2, help="DataNodes, each with one dask worker (default 2)")
    p.add_argument("--replication", type=int, default=1, help="HDFS replicas per block (default 1)")
    p.add_argument("--partition-mib", type=int, help="partition file = HDFS block size, MiB (default 128, 16 with --small)")
    p.add_argument("--json", metavar="FILE", help="also write the records as JSON lines to FILE")
    return p


def _harness():
    spec = importlib.util.spec_from_file_location("stem_explorer_minicluster", REPO_ROOT / "scripts/hdfs/minicluster.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(session, name: str, nbytes: int, repeat: int) -> dict:
    """Time the disk on ``session``: the first run alone, then the warm median."""
    import stem_explorer as se

    def build():
        return [se.VirtualDetector({"bf": disk_mask(session.dataset.sig_shape)})]

    first = timing.time_job(session, build)
    seconds = timing.repeat(lambda: timing.time_job(session, build), repeat, warmup=0)
    job = session.run(*build())
    job.result()
    stats = job.stats
    return {"kind": "hdfs", "read": name, "first_s": first, **timing.summarise(seconds, nbytes),
            "locality_hit_rate": stats.locality_hit_rate, "partitions": stats.n_partitions,
            "tasks_per_worker": stats.tasks_per_worker}


def measure(args) -> list[dict]:
    import stem_explorer as se
    from distributed import Client

    bench = data.ensure(args.dir, args.small, _log)["raw-uint16"]
    harness = _harness()
    base = Path(args.dir) / "hdfs-cluster"
    mib = args.partition_mib or (16 if args.small else 128)
    local_copy = Path(args.dir) / f"hdfs-local-{bench.path.stem}-{mib}M"
    partition = mib * 2**20
    records = []
    _log(f"starting HDFS + dask: {args.nodes} nodes, replication {args.replication}")
    with harness.MiniCluster(base, args.nodes, replication=args.replication, block_size=partition) as mc, \
            Client(mc.scheduler_address) as client:
        url = mc.url("/bench/" + bench.path.stem)
        options = dict(client=client, partition_bytes=partition, progress=False)
        t0 = time.perf_counter()
        se.ingest(bench.open(), url, webhdfs=mc.namenode_http, replication=args.replication, **options)
        ingest_s = time.perf_counter() - t0
        _log(f"ingested {bench.nbytes / 2**30:.2f} GiB to HDFS in {ingest_s:.1f} s")
        se.ingest(bench.open(), local_copy, **options)
        sets = [("local files", se.open_dataset(local_copy)),
                ("hdfs, locality + short-circuit", se.open_dataset(url, webhdfs=mc.namenode_http)),
                ("hdfs, locality, WebHDFS reads only", se.open_dataset(url, webhdfs=mc.namenode_http, short_circuit="off"))]
        for name, ds in sets:
            _log(f"disk on {name}")
            with se.Session(ds, client=client, partition_bytes=partition) as session:
                records.append(_row(session, name, bench.nbytes, args.repeat))
        records.append({"kind": "hdfs_ingest", "seconds": ingest_s, "gbps": bench.nbytes / ingest_s / 1e9,
                        "nodes": args.nodes, "replication": args.replication})
    shutil.rmtree(base, ignore_errors=True)  # the HDFS copy (the local one is kept for the next run)
    local = records[0]["gbps"]
    for r in records[1:3]:
        r.update(ratio=r["gbps"] / local, target=f">= {TARGET_FRACTION:.0%} of local files",
                 **{"pass": r["gbps"] >= TARGET_FRACTION * local})
    return records


def table(records: list[dict]) -> str:
    lines = ["| read | median s | min s | first run s | GB/s | vs local files | locality hit rate |",
             "|---|---|---|---|---|---|---|"]
    for r in (r for r in records if r["kind"] == "hdfs"):
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else "1"
        hit = "n/a" if r["locality_hit_rate"] is None else f"{r['locality_hit_rate']:.0%}"
        lines.append(f"| {r['read']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {r['first_s']:.3f} | "
                     f"{r['gbps']:.2f} | {ratio} | {hit} |")
    ingest = next(r for r in records if r["kind"] == "hdfs_ingest")
    lines.append(f"\ningestion to HDFS: {ingest['seconds']:.1f} s ({ingest['gbps']:.2f} GB/s), "
                 f"{ingest['nodes']} nodes, replication {ingest['replication']}")
    return "\n".join(lines)


def main(argv=None, prog: str = "python -m benchmarks --hdfs") -> int:
    """``python -m benchmarks --hdfs``: measure and print the table (or JSON lines)."""
    return report.side_main(build_parser, measure, table, argv, prog)

"""Detector-format throughput (issue 5): each native reader against raw uint16 of the
same frames, in one run on one cluster.

``python -m benchmarks --formats`` (options: ``python -m benchmarks --formats --help``).
Every file holds the same frames (the main benchmark's raw uint16 sample, 256 x 256
scan of 128 x 128 frames, or 64 x 64 with ``--small``) in another format, written once
into the data folder by the writers of :mod:`stem_explorer.io.synthetic` (the ones the
reader tests use) and reused while present:

* raw uint16 (the reference; :mod:`benchmarks.data`);
* Merlin ``.mib`` 12-bit (big-endian uint16) and 6-bit (uint8), with a ``.hdr`` giving
  the scan width;
* NanoMegas blockfile (uint8);
* zarr v2 chunked by whole frames ``(1, 16, 128, 128)`` with numcodecs Blosc-LZ4, and
  zarr v3 with the same chunks uncompressed.

Each file gets the sum frame and the virtual bright-field disk of the main suite
(:mod:`benchmarks.workloads`), timed as there (:mod:`benchmarks.timing`: one warm-up,
``--repeat`` timed runs, median). GB/s counts the frame bytes in the file's own dtype
(1 byte a pixel for uint8 files); the comparison is in frames per second, the same
frames and detector pixels in every file, against the raw uint16 file's figure for the
same workload in the same run. Issue 5's target: decoding formats reach at least half
of it. ``--in-process`` times the same passes without a cluster (``engine.run_local``
in this process), the readers' own cost. Method and figures: ``docs/performance.md``
("Detector formats").
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from . import data, report, timing
from .workloads import all_workloads

#: Issue 5: a decoding format reaches at least this fraction of raw uint16 frames/s.
TARGET_FRACTION = 0.5
#: The workloads run on every file (keys of :func:`benchmarks.workloads.all_workloads`).
WORKLOADS = ("sum", "disk")
#: Frames per zarr chunk along the scan's fast axis (as the chunked HDF5 file).
ZARR_CHUNK_FRAMES = data.CHUNK_FRAMES


def _log(message: str) -> None:
    print(f"[bench-formats] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class FormatFile:
    """One file of the comparison: where it is, how to write and open it."""

    key: str  # "mib-12bit"
    name: str  # readable, for the table
    path: Path
    write: Optional[Callable] = None  # (path, raw uint16 frames) -> None; None: the reference
    options: dict = field(default_factory=dict)  # open_dataset options

    @property
    def decodes(self) -> bool:
        """True for the formats held to the target (every one but the reference)."""
        return self.write is not None

    def open(self):
        from stem_explorer import open_dataset

        return open_dataset(str(self.path), **self.options)

    def stored_bytes(self) -> int:
        """Bytes on disk (a zarr store's files summed), headers included."""
        if self.path.is_dir():
            return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return self.path.stat().st_size


def _clipped(top: int) -> Callable:
    return lambda block: np.minimum(block, top)


def _write_mib(path: Path, raw: np.ndarray, *, depth: int) -> None:
    from stem_explorer.io.synthetic import FrameBlocks, write_mib

    dtype, pixel_depth = (">u2", "U16") if depth == 12 else ("u1", "U08")
    frames = FrameBlocks(raw, dtype=dtype, transform=_clipped(2**depth - 1))
    ny, nx = frames.nav_shape
    hdr = {"Frames in Acquisition (Number)": ny * nx, "Frames per Trigger (Number)": nx,
           "Counter Depth (number)": depth}
    write_mib(path, frames, pixel_depth=pixel_depth, counter_depth=depth, hdr=hdr)


def _write_blockfile(path: Path, raw: np.ndarray) -> None:
    from stem_explorer.io.synthetic import FrameBlocks, write_blockfile

    write_blockfile(path, FrameBlocks(raw, dtype="u1", transform=_clipped(255)))


def _write_zarr(path: Path, raw: np.ndarray, *, zarr_format: int, compressed: bool) -> None:
    from stem_explorer.io.synthetic import FrameBlocks, write_zarr

    codec = None
    if compressed:
        import numcodecs

        codec = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    chunks = (1, min(ZARR_CHUNK_FRAMES, raw.shape[1])) + raw.shape[2:]
    write_zarr(path, FrameBlocks(raw), zarr_format=zarr_format, chunks=chunks, codec=codec)


def plan(folder: Path, small: bool = False) -> list[FormatFile]:
    """The files of a full or ``--small`` run in ``folder``, the reference first."""
    ref = data.plan(folder, small)["raw-uint16"]
    tag = ref.path.stem.split("_", 1)[1]  # "256x256x128x128"
    raw_options = dict(format="raw", nav_shape=ref.nav_shape, sig_shape=ref.sig_shape, dtype=ref.dtype)
    return [
        FormatFile("raw-uint16", "raw uint16 (reference)", ref.path, options=raw_options),
        FormatFile("mib-12bit", "Merlin .mib 12-bit (>u2)", folder / f"mib12_{tag}.mib",
                   functools.partial(_write_mib, depth=12)),
        FormatFile("mib-6bit", "Merlin .mib 6-bit (u1)", folder / f"mib6_{tag}.mib",
                   functools.partial(_write_mib, depth=6)),
        FormatFile("blockfile", "NanoMegas blockfile (u1)", folder / f"blo_{tag}.blo", _write_blockfile),
        FormatFile("zarr-v2-lz4", "zarr v2, Blosc-LZ4 (u2)", folder / f"zarr2lz4_{tag}.zarr",
                   functools.partial(_write_zarr, zarr_format=2, compressed=True)),
        FormatFile("zarr-v3-raw", "zarr v3, uncompressed (u2)", folder / f"zarr3_{tag}.zarr",
                   functools.partial(_write_zarr, zarr_format=3, compressed=False)),
    ]


def ensure(folder, small: bool = False, log: Callable[[str], None] = print) -> list[FormatFile]:
    """Create the files missing in ``folder`` from the raw uint16 reference (itself
    created by :func:`benchmarks.data.ensure` when absent); return all of them."""
    folder = Path(folder)
    ref = data.ensure(folder, small, log, keys=("raw-uint16",))["raw-uint16"]
    files = plan(folder, small)
    raw = np.memmap(ref.path, ref.dtype, mode="r", shape=ref.nav_shape + ref.sig_shape)
    for f in files:
        if f.write is None or f.path.exists():
            continue
        log(f"writing {f.path.name} ({f.name}) ...")
        # written in a scratch folder and moved in when complete, the main file last,
        # so an interrupted run never leaves a partial file under the final name
        scratch = folder / f".partial-{f.path.name}"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        try:
            f.write(scratch / f.path.name, raw)
            for p in sorted(scratch.iterdir(), key=lambda p: p.name == f.path.name):
                os.replace(p, folder / p.name)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return files


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    data.add_data_options(p)
    p.add_argument("--workers", type=data.at_least_one, default=2, help="worker processes of the embedded LocalCluster")
    p.add_argument("--only", nargs="+", metavar="KEY", help="format keys to run besides the reference "
                   "(raw-uint16 mib-12bit mib-6bit blockfile zarr-v2-lz4 zarr-v3-raw)")
    p.add_argument("--in-process", action="store_true", help="no cluster: run the partitions one after "
                   "the other in this process (engine.run_local), isolating the readers from scheduling "
                   "and the other process")
    p.add_argument("--json", metavar="FILE", help="also write the records as JSON lines to FILE")
    return p


def _time_in_process(ds, build) -> float:
    """Seconds of one pass over every partition of ``ds`` in this process."""
    from stem_explorer.analyses import build_plan
    from stem_explorer.engine import run_local

    plan, _ = build_plan(build(), ds)
    t0 = time.perf_counter()
    run_local(ds.partitions(1), plan)
    return time.perf_counter() - t0


def _row(session, f: FormatFile, workload, repeat: int) -> dict:
    """Time one workload on one file (``session``: a Session, or a DataSet to time in
    this process)."""
    ds = getattr(session, "dataset", session)
    build = functools.partial(workload.build, ds.sig_shape)
    time_one = timing.time_job if ds is not session else _time_in_process
    seconds = timing.repeat(functools.partial(time_one, session, build), repeat)
    stats = timing.summarise(seconds, ds.nbytes)
    return {
        "kind": "format", "format": f.key, "name": f.name, "workload": workload.key, "file": str(f.path),
        "dtype": ds.dtype.str, "nav_shape": list(ds.nav_shape), "sig_shape": list(ds.sig_shape),
        "n_frames": ds.n_frames, "data_bytes": ds.nbytes, "stored_bytes": f.stored_bytes(),
        "read_path": ds.metadata.get("read_path"), "scan_shape_source": ds.metadata.get("scan_shape_source"),
        **stats, "frames_per_s": ds.n_frames / stats["median_s"],
    }


def measure(args) -> list[dict]:
    """Every row of one run, as records (dicts); the reference is measured first."""
    from distributed import Client

    from stem_explorer import Session
    from stem_explorer.engine.cluster import start_local_cluster

    from .runner import _run_record

    files = [f for f in ensure(args.dir, args.small, _log) if not f.decodes or not args.only or f.key in args.only]
    builds = {w.key: w for w in all_workloads() if w.data == "raw-uint16" and w.key in WORKLOADS}
    records = [{**_run_record(args), "benchmark": "formats", "in_process": args.in_process}]
    if args.in_process:
        for f in files:
            for key in WORKLOADS:
                _log(f"{key} on {f.path.name}, in this process")
                records.append(_row(f.open(), f, builds[key], args.repeat))
    else:
        _log(f"starting a LocalCluster with {args.workers} workers")
        with start_local_cluster(args.workers) as cluster, Client(cluster) as client:
            for f in files:
                with Session(f.open(), client=client) as session:
                    for key in WORKLOADS:
                        _log(f"{key} on {f.path.name}")
                        records.append(_row(session, f, builds[key], args.repeat))
    reference = {r["workload"]: r["frames_per_s"] for r in records if r.get("format") == "raw-uint16"}
    for r in records[1:]:
        ratio = r["frames_per_s"] / reference[r["workload"]]
        decodes = r["format"] != "raw-uint16"
        r.update(ratio=ratio, target=f">= {TARGET_FRACTION:.0%} of raw uint16 frames/s" if decodes else "reference",
                 **{"pass": ratio >= TARGET_FRACTION if decodes else None})
    return records


def table(records: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = ["| file | workload | stored | median s | min s | GB/s (file data) | frames/s | vs raw uint16 | >= 50 % |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in records if r["kind"] == "format"):
        verdict = "ref." if r["pass"] is None else ("yes" if r["pass"] else "NO")
        lines.append(
            f"| {r['name']} | {r['workload']} | {r['stored_bytes'] / 2**30:.2f} GiB | {r['median_s']:.3f} | "
            f"{r['min_s']:.3f} | {r['gbps']:.2f} | {r['frames_per_s']:,.0f} | {r['ratio']:.2f} | {verdict} |")
    return "\n".join(lines)


def main(argv=None, prog: str = "python -m benchmarks --formats") -> int:
    """``python -m benchmarks --formats``: measure and print the table (or JSON lines)."""
    return report.side_main(build_parser, measure, table, argv, prog)

"""Live acquisition throughput and latency (issue 19): a Merlin simulator process
streams 12-bit quad (512 x 512, big-endian uint16) frames over loopback to the
receiver in this process, and a session on an embedded LocalCluster runs one virtual
detector (a disk) and the sum frame on the live data set as the frames arrive.

``python -m benchmarks --live`` (options: ``python -m benchmarks --live --help``;
``--repeat N`` runs the receive-only acquisition N times and reports the median).

Three or four acquisitions of the same synthetic file (``--distinct`` frames, cycled
through the scan by the simulator):

* **receive only**: full speed, frames received and released, no job: the
  receiver's own throughput and CPU cost;
* **full speed**: the simulator sends as fast as the receiver reads. Reported: the
  receiver's throughput (first to last frame), the end-to-end throughput (the job's
  final result after the acquisition started), frames lost (sequence gaps; the
  target allows none), the time the sender was held back by back-pressure, the ring
  buffer's peak, and whether the results equal numpy's;
* **paced** (``--fps``): frame arrival (recorded by the receiver) to the first
  snapshot covering it (the first job's, and after the mask change the second's),
  median and 90th percentile over every frame; and the mask change latency: a
  second job superseding the first mid-scan, from ``run()`` to its first snapshot
  showing every frame recorded when it started (a preview from the reduced copy
  kept here, or exact values) and to the first covering them all exactly. A
  snapshot covers the frames from the job's first frame (later than 0 on a spool
  once the earlier ones were let go: then only those still held are re-covered) to
  ``first frame + frames_done``;
* **mask change** (``--change-scan Y X``, the issue's 256 x 256): full speed,
  recorded to a folder (every frame is re-covered), the mask changed after
  ``--change-at`` frames (default half the scan), then the simulator stopped once
  the new job covered them exactly (the rest of the scan would measure nothing
  new).

Frames go to a spool (``record=None``) unless ``--record DIR`` records them.
Issue 19's targets: >= 1.5 GB/s with no frame lost; arrival -> drawn <= 100 ms
median (the browser's drawing is not in this figure); mask change -> full image so
far <= 300 ms (for a 256 x 256 scan; here, the scan streamed).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from . import data, report
from .runner import REPO_ROOT, _run_record

TARGET_GBPS = 1.5
TARGET_LATENCY_S = 0.100
TARGET_MASK_CHANGE_S = 0.300
SIG = (512, 512)


def _log(message: str) -> None:
    print(f"[bench-live] {message}", file=sys.stderr, flush=True)


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=str(REPO_ROOT / "bench_data"), help="folder of the synthetic .mib (created if absent)")
    p.add_argument("--scan", type=int, nargs=2, default=[64, 64], metavar=("Y", "X"),
                   help="scan of the full-speed acquisition (default 64 64: 4096 frames, 2 GiB)")
    p.add_argument("--distinct", type=int, default=32, help="distinct frames in the file, cycled through the scan")
    p.add_argument("--fps", type=float, default=200.0, help="frame rate of the paced acquisition (latency)")
    p.add_argument("--paced-scan", type=int, nargs=2, default=[16, 32], metavar=("Y", "X"),
                   help="scan of the paced acquisition")
    p.add_argument("--change-scan", type=int, nargs=2, metavar=("Y", "X"),
                   help="also run the mask change acquisition on this scan (the issue's: 256 256): full speed, "
                        "recorded to --record (default: a folder in --dir), the mask changed after --change-at "
                        "frames, the simulator stopped once the new job covered them exactly")
    p.add_argument("--change-at", type=data.at_least_one, metavar="N",
                   help="frames received before the mask change acquisition's change (default: half its scan)")
    p.add_argument("--repeat", type=data.at_least_one, default=1,
                   help="receive-only acquisitions to run; the row is the median one by the receiver's CPU s/GB "
                        "(its figures vary less than wall-clock ones on a loaded machine)")
    p.add_argument("--workers", type=data.at_least_one, default=2, help="worker processes of the embedded LocalCluster")
    p.add_argument("--record", metavar="DIR", help="record the frames to DIR (default: a spool, discarded once read)")
    p.add_argument("--json", metavar="FILE", help="also write the records as JSON lines to FILE")
    p.add_argument("--format", choices=["table", "json"], default="table", help="stdout: table or JSON lines")
    return p


def ensure_file(folder: Path, n: int) -> tuple[Path, np.ndarray]:
    """The synthetic 12-bit quad .mib of ``n`` frames (written once) and its frames."""
    from stem_explorer.io.synthetic import write_mib

    frames = np.random.default_rng(19).integers(0, 4096, (n,) + SIG).astype(">u2")
    path = Path(folder) / f"live_quad12_{n}.mib"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        write_mib(tmp, frames, pixel_depth="U16", counter_depth=12)
        tmp.replace(path)
    return path, frames


class Timeline:
    """``(time, count)`` pairs of a growing count (frames recorded, frames merged)."""

    def __init__(self):
        self.times: list[float] = []
        self.counts: list[int] = []
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            if not self.counts or count > self.counts[-1]:
                self.times.append(time.perf_counter())
                self.counts.append(int(count))

    def time_of(self, frames: np.ndarray) -> np.ndarray:
        """When the count first reached ``frames + 1`` (frame indices)."""
        i = np.searchsorted(np.asarray(self.counts), frames + 1)
        return np.asarray(self.times + [math.nan])[i]


class _Releaser:
    """Stands in for a job when frames are only received: reads nothing, releases
    every frame as it arrives."""

    def __init__(self, live):
        self.live = live
        self.token, _ = live.register_consumer()

    def result(self, timeout=None) -> None:
        while not self.live.ended:
            self.live.consumed(self.token, self.live.frames_available)
            self.live.wait_for_frames(self.live.frames_available + 1, timeout=0.05)
        self.live.consumed(self.token, self.live.frames_available)
        self.live.unregister_consumer(self.token)


def _cpu(processes) -> float:
    """User + system CPU seconds of ``processes`` so far (all their threads)."""
    return sum(sum(p.cpu_times()[:2]) for p in processes)


def _merged_upto(p) -> int:
    """The frames a live job's snapshot ``p`` covers end here: they run from its first
    frame (later than 0 when a spool had let go of the earlier ones) for
    ``p.frames_done`` frames, in acquisition order."""
    return p.frames_done + math.prod(p.filled.shape) - p.n_frames


def _latencies(arrived: Timeline, merged: Timeline, n: int) -> np.ndarray:
    frames = np.arange(n)
    return merged.time_of(frames) - arrived.time_of(frames)


def _acquire(session_client, path: Path, scan, args, *, fps=None, change_at=None, follow=True, record=None,
             stop_after_change=False) -> dict:
    """One acquisition with a job following it (``follow=False``: frames only
    received and released, the receiver's own cost); with ``change_at``, a second job
    of another mask once that many frames have arrived (``stop_after_change``: the
    simulator is then killed once that job has covered them exactly, and the
    interrupted acquisition's results are not checked); the measurements."""
    from stem_explorer import Session, SumFrame, VirtualDetector, masks
    from stem_explorer.errors import AcquisitionError
    from stem_explorer.live import SimulatorProcess, merlin

    n = math.prod(scan)
    if record is None and args.record:
        record = Path(args.record) / f"live_{'paced' if fps else 'full'}"
    if record is not None:
        shutil.rmtree(record, ignore_errors=True)
    arrived, merged = Timeline(), Timeline()
    workers = [psutil.Process(pid) for pid in session_client.run(os.getpid).values()]
    with SimulatorProcess(path, nav_shape=scan, fps=fps) as sim:
        processes = {"simulator": [psutil.Process(sim.proc.pid)], "receiver": [psutil.Process()], "workers": workers}
        # "receiver": this process, so the session's client and the embedded scheduler too
        cpu0 = {k: _cpu(v) for k, v in processes.items()}
        t_start = time.perf_counter()
        live = merlin("127.0.0.1", **sim.ports, nav_shape=scan, record=record, timeout=60)
        live.add_listener(lambda: arrived.add(live.frames_available))
        session = Session(live, client=session_client)
        analyses = [VirtualDetector({"bf": masks.Disk(256, 256, 64)}), SumFrame()]
        job = session.run(*analyses, on_progress=lambda p: merged.add(_merged_upto(p))) if follow else _Releaser(live)
        mask_change = None
        if change_at:  # a new mask mid-scan: how soon does it cover the scan so far?
            live.wait_for_frames(change_at, timeout=600)
            at = live.frames_available
            mask_change = {"frames_covered": at}
            covering, shown = Timeline(), Timeline()

            def follow_second(p) -> None:
                covering.add(_merged_upto(p))
                merged.add(_merged_upto(p))  # the frames after the first job's: their latency
                filled = p.filled.ravel()[math.prod(p.filled.shape) - p.n_frames : at]
                shown.add(at if filled.all() else 0)  # every frame so far on screen (a preview or exact)
                if "first_snapshot_s" not in mask_change:  # the preview: what it showed, how soon
                    mask_change.update(first_snapshot_s=time.perf_counter() - t_run, first_shown=int(filled.sum()))

            # how far the first job had got: a preview shows what its thread had binned
            mask_change["first_job_merged"] = merged.counts[-1] if merged.counts else 0
            t_run = time.perf_counter()
            job = session.run(VirtualDetector({"adf": masks.Ring(256, 256, 80, 200)}), SumFrame(), supersede=True,
                              on_progress=follow_second)
            while not job.done and (not covering.counts or covering.counts[-1] < at):
                time.sleep(0.01)  # until the exact values cover the frames so far
            mask_change["seconds"] = float(covering.time_of(np.array([at - 1]))[0] - t_run)
            mask_change["shown_seconds"] = float(shown.time_of(np.array([at - 1]))[0] - t_run)
            mask_change["preview"] = job.preview_source == "reduced"
            if stop_after_change:
                sim.kill()
        try:
            results = job.result(timeout=600)
        except AcquisitionError:
            if not stop_after_change:
                raise
            results = None
        t_end = time.perf_counter()
        cpu = {k: _cpu(v) - cpu0[k] for k, v in processes.items()}
    stats = live.stats()
    frame_bytes = live.frame_bytes
    latency = _latencies(arrived, merged, n) if follow else np.empty(0)
    latency = latency[np.isfinite(latency)]
    record_out = {
        "n_frames": n, "scan": list(scan), "frame_bytes": frame_bytes, "data_bytes": n * frame_bytes,
        "fps": fps, "recorded_to": str(record) if record else "spool (discarded)",
        "frames_received": stats.frames_received, "frames_dropped": stats.frames_dropped,
        "receive_s": stats.elapsed, "receive_gbps": stats.gbps,
        "end_to_end_s": t_end - t_start,
        "end_to_end_gbps": stats.frames_received * frame_bytes / (t_end - t_start) / 1e9,
        "stopped_after_change": stop_after_change,
        "sender_stalled_s": stats.stalled_s, "buffer_bytes": stats.buffer_bytes,
        "buffer_peak_bytes": stats.buffer_peak_bytes,
        "latency_median_s": float(np.median(latency)) if latency.size else None,
        "latency_p90_s": float(np.percentile(latency, 90)) if latency.size else None,
        "mask_change": mask_change,
        # CPU seconds per GB received, by process: what the machine's load does not change
        "cpu_s_per_gb": {k: c / (n * frame_bytes / 1e9) for k, c in cpu.items()},
        "sum_frame": results["sum/frame"].data if follow and results is not None else None,
        # a job started mid-scan on a spool covers the frames still held from there on
        # (those its predecessor read are gone: record to a folder to keep them)
        "first_frame": job.first_frame if follow else 0,
        # frames the last job computed in this process (the rest: the workers' tasks)
        "frames_here": getattr(getattr(job, "here", None), "frames", 0) if follow else 0,
    }
    live.close()
    return record_out


def _median_of(runs: list[dict]) -> dict:
    """The run with the median receiver CPU s/GB, with every run's figure beside it."""
    ordered = sorted(runs, key=lambda r: r["cpu_s_per_gb"]["receiver"])
    median = dict(ordered[(len(ordered) - 1) // 2])
    median["repeats"] = {"runs": len(runs), "receiver_cpu_s_per_gb": [r["cpu_s_per_gb"]["receiver"] for r in runs],
                         "receive_gbps": [r["receive_gbps"] for r in runs]}
    return median


def measure(args) -> list[dict]:
    from distributed import Client

    from stem_explorer.engine import warmup as stem_warmup
    from stem_explorer.engine.cluster import start_local_cluster

    path, frames = ensure_file(Path(args.dir), args.distinct)
    records = [{**_run_record(argparse.Namespace(repeat=1, small=False, workers=args.workers)), "benchmark": "live",
                "load_average": os.getloadavg()}]
    _log(f"starting a LocalCluster with {args.workers} workers")
    cluster = start_local_cluster(args.workers)
    client = Client(cluster)
    try:
        _log("warm-up acquisition (kernels compiled on the workers and here)")
        _acquire(client, path, (4, 8), args)
        stem_warmup.wait_warm(frames.dtype, timeout=120)  # the job's warm-up here: jobs compute here from then on
        runs = [("receive only", tuple(args.scan), None, False), ("full speed", tuple(args.scan), None, True),
                ("paced", tuple(args.paced_scan), args.fps, True)]
        if args.change_scan:
            runs.append(("mask change", tuple(args.change_scan), None, True))
        for kind, scan, fps, follow in runs:
            _log(f"{kind}: scan {scan} of 512x512 12-bit frames")
            if kind == "mask change":
                record = Path(args.record or args.dir) / "live_change"
                r = _acquire(client, path, scan, args, change_at=args.change_at or math.prod(scan) // 2,
                             record=record, stop_after_change=True)
                shutil.rmtree(record, ignore_errors=True)
            elif follow:
                r = _acquire(client, path, scan, args, fps=fps, change_at=math.prod(scan) // 2 if fps else None)
            else:
                r = _median_of([_acquire(client, path, scan, args, follow=False) for _ in range(args.repeat)])
            n, summed = r["n_frames"], r.pop("sum_frame")
            covered = np.arange(r["first_frame"], n)  # the frames the last job read
            cycle = np.bincount(covered % len(frames), minlength=len(frames)).astype(np.float64)
            expected = np.tensordot(cycle, frames.astype(np.float64), axes=1)
            r["results_equal_numpy"] = None if summed is None else bool(np.array_equal(summed, expected))
            records.append({"kind": "live", "acquisition": kind, **r})
    finally:
        client.close()
        try:
            cluster.close()
        except TimeoutError:  # its workers end with this process anyway
            _log("the cluster did not close in time (a loaded machine?); measurements kept")
    only = next(r for r in records if r.get("acquisition") == "receive only")
    only["pass"] = only["receive_gbps"] >= TARGET_GBPS and only["frames_received"] == only["n_frames"]
    full = next(r for r in records if r.get("acquisition") == "full speed")
    paced = next(r for r in records if r.get("acquisition") == "paced")
    full["pass"] = full["end_to_end_gbps"] >= TARGET_GBPS and full["frames_dropped"] == 0 and full["frames_received"] == full["n_frames"]
    paced["pass"] = (paced["latency_median_s"] or math.inf) <= TARGET_LATENCY_S and (
        (paced["mask_change"] or {}).get("shown_seconds", math.inf) <= TARGET_MASK_CHANGE_S)
    for change in (r for r in records if r.get("acquisition") == "mask change"):
        change["pass"] = change["mask_change"]["shown_seconds"] <= TARGET_MASK_CHANGE_S
    return records


def table(records: list[dict]) -> str:
    run = records[0]
    lines = [
        f"live acquisition on {run['cores']} cores ({run['workers']} workers), loopback, load average "
        f"{run['load_average'][0]:.1f} at the start; "
        f"targets: >= {TARGET_GBPS} GB/s with no frame lost, arrival -> result <= {TARGET_LATENCY_S * 1e3:.0f} ms "
        f"median, mask change <= {TARGET_MASK_CHANGE_S * 1e3:.0f} ms",
        "",
        "| acquisition | frames | GiB | receive GB/s | end-to-end GB/s | lost | sender stalled s | ring peak MiB "
        "| latency median / p90 ms | mask change: all shown / exact ms (frames so far; the new job's first snapshot) | = numpy | target met | frames computed here "
        "| CPU s/GB: this process (receiver, client, scheduler, job's thread), workers, simulator "
        "| cores for 1.5 GB/s without the simulator |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in (r for r in records if r.get("kind") == "live"):
        change, cpu = r["mask_change"], r["cpu_s_per_gb"]
        change_text = "-" if not change else (
            f"{change['shown_seconds'] * 1e3:.0f} / {change['seconds'] * 1e3:.0f} ({change['frames_covered']}; "
            f"first snapshot {change['first_snapshot_s'] * 1e3:.0f} ms{' preview' if change['preview'] else ''} "
            f"showing {change['first_shown']}, the first job had merged {change['first_job_merged']})")
        if change and r["first_frame"]:  # a spool had let go of the frames before it
            change_text += f", from frame {r['first_frame']}"
        latency = "-" if r["latency_median_s"] is None else f"{r['latency_median_s'] * 1e3:.0f} / {r['latency_p90_s'] * 1e3:.0f}"
        name = r["acquisition"] if r["fps"] is None else f"{r['acquisition']} ({r['fps']:g} fps)"
        if r.get("repeats", {}).get("runs", 1) > 1:
            name += f" (median of {r['repeats']['runs']})"
        lines.append(
            f"| {name} | {r['n_frames']} | {r['data_bytes'] / 2**30:.2f} | {r['receive_gbps']:.2f} "
            f"| {r['end_to_end_gbps']:.2f} | {r['frames_dropped'] if r['stopped_after_change'] else r['n_frames'] - r['frames_received']} "
            f"| {r['sender_stalled_s']:.2f} | {r['buffer_peak_bytes'] / 2**20:.0f} of {r['buffer_bytes'] / 2**20:.0f} "
            f"| {latency} | {change_text} | {_yes(r['results_equal_numpy'])} | {_yes(r['pass'])} "
            f"| {_share_here(r)} "
            f"| {cpu['receiver']:.2f}, {cpu['workers']:.2f}, {cpu['simulator']:.2f} "
            f"| {(cpu['receiver'] + cpu['workers']) * TARGET_GBPS:.1f} |"
        )
    return "\n".join(lines)


def _share_here(r: dict) -> str:
    """The share of the last job's frames computed in this process ("-": no job)."""
    if r["results_equal_numpy"] is None:
        return "-"
    return f"{r.get('frames_here', 0) / max(1, r['n_frames'] - r['first_frame']):.0%}"


def _yes(flag) -> str:
    return "-" if flag is None else ("yes" if flag else "NO")


def main(argv=None, prog: str = "python -m benchmarks --live") -> int:
    """``python -m benchmarks --live``: measure and print the table (or JSON lines)."""
    return report.side_main(build_parser, measure, table, argv, prog)

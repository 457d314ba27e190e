"""The resource figures and the preview of a job, and a live acquisition's progress,
as the Explorer's status texts."""

from __future__ import annotations

import html

from ..engine import monitor


def live_usage_text(job) -> str:
    """What the workers of a running ``job`` use now (their latest samples added up),
    e.g. ``" · CPU 180% · 612 MiB · 1.4 GB/s read on 2 workers"``; empty before the
    first sample."""
    usage = monitor.latest_usage(job.stats) if job is not None else None
    if usage is None:
        return ""
    return (f" &nbsp;·&nbsp; CPU {usage['cpu_percent']:.0f}% &nbsp;·&nbsp; {usage['rss_bytes'] / 2**20:.0f} MiB"
            f" &nbsp;·&nbsp; {usage['read_bytes_per_s'] / 1e9:.2f} GB/s read on {usage['workers']} workers")


def preview_text(progress, copy) -> str:
    """What a running job's image shows while it is (partly) a preview, for the status
    line: from the reduced copy (and how coarse), or from the coarse grid (and, when
    the session has no reduced copy, why: e.g. its memory budget is too small); empty
    once every value shown is exact or without a preview."""
    if not progress.is_preview:
        return ""
    spec = getattr(copy, "spec", None)
    if progress.preview_source == "reduced" and spec is not None:
        grid = f", one scan row and column in {spec.scan_step}" if spec.scan_step > 1 else ""
        return (f"preview from the reduced copy in memory ({spec.binning} x {spec.binning} binned detector{grid}),"
                f" refining to the exact result")
    text = f"coarse preview (one scan row and column in {progress.preview_stride}), refining to the exact result"
    if spec is None and copy is not None and copy.reason:
        text += f" &nbsp;·&nbsp; {html.escape(copy.reason)}"
    return text


def done_text(stats) -> str:
    """A finished job's summary: throughput, time, CPU seconds and peak worker RSS."""
    text = f"done: {stats.gbps:.2f} GB/s, {stats.elapsed:.2f} s"
    if stats.workers:
        text += (f", {stats.cpu_seconds:.2f} CPU s on {len(stats.workers)} workers,"
                 f" peak {stats.peak_rss_bytes / 2**20:.0f} MiB per worker")
    return text


def acquisition_text(state: str, stats, error=None, first_frame: int = 0) -> str:
    """A live acquisition's status line (HTML) from its ``state`` (``"acquiring"``,
    ``"complete"``, ``"interrupted"``), :class:`~stem_explorer.io.live.LiveStats`
    and error: ``"recording 120 of 4096 frames"`` while it runs, then ``"acquisition
    complete: 4096 of 4096 frames"`` or the error ("acquisition interrupted after N of
    M frames: ..."); frames the detector dropped are added, and ``first_frame`` (the
    first frame the image covers, later than 0 when a spool had let the earlier ones
    go) is said."""
    if state == "acquiring":
        text = f"recording {stats.frames_received} of {stats.frames_expected} frames"
    elif error is None:
        text = f"acquisition complete: {stats.frames_received} of {stats.frames_expected} frames"
    else:
        text = html.escape(str(error))
    if stats.frames_dropped:
        text += f" &nbsp;·&nbsp; {stats.frames_dropped} dropped by the detector (recorded as zeros)"
    if first_frame:
        text += (f" &nbsp;·&nbsp; the image shows frames {first_frame} on: the earlier ones were read and "
                 "discarded before this mask (record to a folder to keep every frame)")
    return text

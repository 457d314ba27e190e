"""The resource figures of a job as the Explorer's status texts."""

from __future__ import annotations

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


def done_text(stats) -> str:
    """A finished job's summary: throughput, time, CPU seconds and peak worker RSS."""
    text = f"done: {stats.gbps:.2f} GB/s, {stats.elapsed:.2f} s"
    if stats.workers:
        text += (f", {stats.cpu_seconds:.2f} CPU s on {len(stats.workers)} workers,"
                 f" peak {stats.peak_rss_bytes / 2**20:.0f} MiB per worker")
    return text

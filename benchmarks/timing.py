"""Timing jobs in a warm session: repeated runs, and first-partial-result latency."""

from __future__ import annotations

import statistics
import time
from typing import Callable

from stem_explorer.engine import warmup as stem_warmup


def summarise(seconds: list[float], nbytes: int) -> dict:
    """median/min/max seconds of ``seconds`` and GB/s at the median."""
    median = statistics.median(seconds)
    return {
        "runs": len(seconds),
        "median_s": median,
        "min_s": min(seconds),
        "max_s": max(seconds),
        "gbps": nbytes / median / 1e9 if median > 0 else float("inf"),
    }


def time_job(session, build: Callable[[], list]) -> float:
    """Seconds from ``session.run`` to ``job.result()`` returning (analyses built before)."""
    analyses = build()
    t0 = time.perf_counter()
    session.run(*analyses).result()
    return time.perf_counter() - t0


def time_first_partial(session, build: Callable[[], list]) -> float:
    """Seconds from ``session.run`` to the first Progress yielded by iterating the job;
    the job is then waited for, so it does not overlap the next measurement."""
    analyses = build()
    t0 = time.perf_counter()
    job = session.run(*analyses)
    next(iter(job))
    elapsed = time.perf_counter() - t0
    job.result()
    return elapsed


def repeat(measure: Callable[[], float], n: int, warmup: int = 1, dtype=None) -> list[float]:
    """``warmup`` untimed calls of ``measure``, then the results of ``n`` timed ones.

    With ``dtype``, the timed calls also wait for this process's background warm-up of
    that dtype, which a session starts when its first job ends (a one-time 0.4 s of the
    client's CPU that would land in the first timed runs).
    """
    for _ in range(warmup):
        measure()
    if dtype is not None:
        stem_warmup.wait_warm(dtype, timeout=60)
    return [measure() for _ in range(n)]

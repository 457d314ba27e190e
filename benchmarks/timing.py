"""Timing jobs in a warm session: repeated runs, and first-partial-result latency."""

from __future__ import annotations

import statistics
import time
from typing import Callable


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


def repeat(measure: Callable[[], float], n: int, warmup: int = 1) -> list[float]:
    """``warmup`` untimed calls of ``measure``, then the results of ``n`` timed ones."""
    for _ in range(warmup):
        measure()
    return [measure() for _ in range(n)]

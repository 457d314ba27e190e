"""Mask change -> preview and -> exact result (issue 17, the reduced copy), for
``--bigdata``.

Runs in the session of the full passes, which left the reduced copy in the workers
(:mod:`stem_explorer.engine.reduced`). Each of ``--mask-changes`` changes makes the
file cold first (:func:`benchmarks.bigdata.make_cold`), then runs a virtual detector
with a new annulus and times, in this process (the notebook's side, not the browser):
``run`` to the first snapshot that covers the whole field from the reduced copy
(``Progress.preview_source == "reduced"``: the preview), and ``run`` to ``result()``
(the exact pass, read from disk; its rate is compared with the disk's read rate of the
same run). One more change with the copy turned off (``reduced_copy_bytes=0``) times
the coarse-grid preview it replaces.
"""

from __future__ import annotations

import statistics
import threading
import time

import numpy as np

from . import data

#: Target of issue 17: mask change -> full-field preview (on screen; here: in the client).
PREVIEW_TARGET_S = 0.150
#: The table's columns.
COLUMNS = ("mask change", "changes", "-> preview, median ms", "preview from", "target ms", "met",
           "-> exact, median s", "exact GB/s", "vs disk read", "copy")


def _ring(sig_shape, k: int):
    from stem_explorer.masks import Ring

    cy, cx = (sig_shape[0] - 1) / 2, (sig_shape[1] - 1) / 2
    inner = min(sig_shape) * (0.15 + 0.03 * k)
    return Ring(cy, cx, inner, inner + min(sig_shape) * 0.2)


def _one_change(session, bench, make_cold, client, k: int) -> dict:
    from stem_explorer.analyses import VirtualDetector

    cold = make_cold(client, bench.path)
    first = {}
    seen = threading.Event()

    def on_partial(progress) -> None:
        shown = progress.fill_preview(np.where(progress.filled, 0.0, np.nan))
        if not seen.is_set() and not np.isnan(shown).any():  # the whole field, preview or not
            first.update(seconds=time.perf_counter() - t0, source=progress.preview_source,
                         exact_fraction=float(progress.exact.mean()))
            seen.set()

    t0 = time.perf_counter()
    job = session.run(VirtualDetector(_ring(bench.sig_shape, k)), on_partial=on_partial)
    job.result()
    seconds = time.perf_counter() - t0
    return {"preview_s": first.get("seconds"), "preview_source": first.get("source"),
            "exact_at_preview": first.get("exact_fraction"), "exact_s": seconds,
            "gbps": bench.nbytes / seconds / 1e9, "resident_before": cold["resident"]}


def measure_mask_changes(client, session, bench: data.BenchData, make_cold, changes: int, log) -> list[dict]:
    """``changes`` mask changes previewed from the session's reduced copy and one with
    the copy off (the coarse grid); one record each kind."""
    from stem_explorer import Session
    from stem_explorer.engine import reduced_copy

    copy = session.reduced_copy
    log(f"mask changes: {copy.status}")
    records = []
    for name, sess, count in (("reduced copy", session, changes), ("coarse grid (copy off)", None, 1)):
        if sess is None:
            with Session(bench.open(), client=client, reduced_copy_bytes=0) as off:
                runs = [_one_change(off, bench, make_cold, client, k) for k in range(count)]
        else:
            # the copy's preview whatever the file's size: a small --size file passes in
            # under PREVIEW_WORTH_S, where a session would let the exact pass show alone
            worth, reduced_copy.PREVIEW_WORTH_S = reduced_copy.PREVIEW_WORTH_S, 0.0
            try:
                runs = [_one_change(sess, bench, make_cold, client, k) for k in range(count)]
            finally:
                reduced_copy.PREVIEW_WORTH_S = worth
        previews = [r["preview_s"] for r in runs if r["preview_s"] is not None]
        median = statistics.median(previews) if previews else None
        log(f"mask change, {name}: preview median "
            + (f"{median * 1e3:.1f} ms" if median is not None else "none")
            + f", exact median {statistics.median(r['exact_s'] for r in runs):.1f} s")
        records.append({
            "kind": "bigdata_mask_change", "name": name, "runs": runs, "median_preview_s": median,
            "median_exact_s": statistics.median(r["exact_s"] for r in runs),
            "median_gbps": statistics.median(r["gbps"] for r in runs), "target_s": PREVIEW_TARGET_S,
            "pass": median is not None and median <= PREVIEW_TARGET_S,
            "copy": {"binning": copy.spec.binning, "scan_step": copy.spec.scan_step, "nbytes": copy.nbytes,
                     "budget": copy.budget} if copy.spec is not None and sess is not None else None,
        })
    return records


def table(records: list[dict], disk_gbps) -> str:
    """The rows of :func:`measure_mask_changes`'s records as a Markdown table;
    ``disk_gbps``: the disk's read rate of the same run (None: not measured)."""
    rows = [r for r in records if r["kind"] == "bigdata_mask_change"]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        copy = r["copy"]
        described = (f"{copy['binning']} x {copy['binning']} bins, every {copy['scan_step']} scan row(s): "
                     f"{copy['nbytes'] / 2**20:.1f} MiB of {copy['budget'] / 2**20:.0f} MiB") if copy else ""
        preview = "none" if r["median_preview_s"] is None else f"{r['median_preview_s'] * 1e3:.1f}"
        ratio = f"{r['median_gbps'] / disk_gbps:.2f}" if disk_gbps else ""
        lines.append(
            f"| {r['name']} | {len(r['runs'])} | {preview} | {r['runs'][0]['preview_source']} | "
            f"{r['target_s'] * 1e3:.0f} | {'yes' if r['pass'] else 'NO'} | {r['median_exact_s']:.2f} | "
            f"{r['median_gbps']:.2f} | {ratio} | {described} |"
        )
    return "\n".join(lines) if rows else ""

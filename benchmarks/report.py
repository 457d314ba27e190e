"""Output: one JSON line per record, and a text table of the workload rows."""

from __future__ import annotations

import json
import sys
from typing import Iterable, TextIO

#: Columns of the text table: (header, record key, width, number format).
COLUMNS = [
    ("workload", "name", 32, ""),
    ("format", "format", 6, ""),
    ("dtype", "dtype", 7, ""),
    ("median s", "median_s", 8, ".3f"),
    ("min s", "min_s", 7, ".3f"),
    ("max s", "max_s", 7, ".3f"),
    ("GB/s", "gbps", 6, ".2f"),
    ("read GB/s", "plain_read_gbps", 9, ".2f"),
    ("ratio", "ratio", 5, ".2f"),
    ("target", "target", 26, ""),
    ("pass", "pass", 4, ""),
    ("LiberTEM GB/s", "libertem_gbps", 13, ".2f"),
]


def _cell(value, width: int, spec: str) -> str:
    """One cell: numbers right-aligned in ``spec``, text left-aligned, booleans yes/NO."""
    if isinstance(value, bool):
        return ("yes" if value else "NO").ljust(width)
    if isinstance(value, (int, float)) and spec:
        return format(value, spec).rjust(width)
    return str(value).ljust(width)


def table(rows: Iterable[dict]) -> str:
    """The workload records as a fixed-width text table."""
    head = "  ".join(h.rjust(w) if spec else h.ljust(w) for h, _, w, spec in COLUMNS)
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append("  ".join(_cell(row.get(key, ""), w, spec) for _, key, w, spec in COLUMNS))
    return "\n".join(lines)


def reference_lines(records: Iterable[dict]) -> str:
    """One readable line per non-workload record (plain read, latency, cold start)."""
    out = []
    order = {"plain_read": 0, "first_partial": 1, "cold_start": 2}
    for r in sorted((r for r in records if r["kind"] in order), key=lambda r: order[r["kind"]]):
        if r["kind"] == "plain_read":
            p, m = r["preadv"], r["mmap_sum"]
            out.append(
                f"plain read {r['format']} {r['dtype']} ({r['file_bytes'] / 2**30:.2f} GiB, {r['workers']} workers): "
                f"preadv {p['median_gbps']:.2f} GB/s (min {p['min_gbps']:.2f}, max {p['max_gbps']:.2f}), "
                f"np.sum over mmap {m['median_gbps']:.2f} GB/s (min {m['min_gbps']:.2f}, max {m['max_gbps']:.2f})"
            )
        elif r["kind"] == "first_partial":
            out.append(
                f"first partial result ({r['workload']}): median {r['median_s'] * 1e3:.1f} ms "
                f"(min {r['min_s'] * 1e3:.1f}, max {r['max_s'] * 1e3:.1f}; {r['runs']} runs), "
                f"target <= {r['target_s'] * 1e3:.0f} ms: {'pass' if r['pass'] else 'FAIL'}"
            )
        elif r["kind"] == "cold_start":
            out.append(
                f"cold start ({r['workload']}): {r['wall_s']:.2f} s spawn to result (import {r['import_s']:.2f} s, "
                f"Session {r['session_s']:.2f} s, first partial {r['first_partial_s']:.2f} s, result "
                f"{r['result_s']:.2f} s after the child's first statement), target <= {r['target_s']:.0f} s: "
                f"{'pass' if r['pass'] else 'FAIL'}"
            )
    return "\n".join(out)


def write_json_lines(records: Iterable[dict], stream: TextIO) -> None:
    """Each record as one JSON line."""
    for record in records:
        stream.write(json.dumps(record) + "\n")


def emit(records: list, json_path, text: str, as_json: bool = False) -> int:
    """The end of a side benchmark's ``main``: the records as JSON lines to
    ``json_path`` (when given), and ``text`` (its table) or, with ``as_json``, the
    JSON lines to stdout; exit status 0."""
    if json_path:
        with open(json_path, "w") as out:
            write_json_lines(records, out)
    if as_json:
        write_json_lines(records, sys.stdout)
    else:
        print(text)
    return 0


def side_main(build_parser, measure, table, argv, prog: str) -> int:
    """A side benchmark's ``main``: parse ``argv``, measure, report (see :func:`emit`)."""
    args = build_parser(prog).parse_args(argv)
    records = measure(args)
    as_json = getattr(args, "format", "table") == "json"
    return emit(records, args.json, "" if as_json else table(records), as_json)

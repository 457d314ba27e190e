"""What the benchmark smoke tests share: the benchmarks package on ``sys.path`` (it
lives beside the package, not in it) and one run through its entry point."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the benchmarks package

from benchmarks import runner  # noqa: E402


def run_benchmark(name: str, argv: list, tmp_path, capsys) -> tuple[str, list]:
    """``python -m benchmarks --NAME ARGV --dir tmp_path --json ...``: the printed table
    and the JSON records, after checking that it succeeded and its first record says
    which benchmark ran."""
    out = tmp_path / f"{name}.jsonl"
    assert runner.main([f"--{name}", *argv, "--dir", str(tmp_path), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records[0]["kind"] == "run" and records[0]["benchmark"] == name
    return table, records

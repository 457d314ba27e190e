"""The README's lists are the code's: every built-in reader and every CLI command.

Like the colour maps shared by Python and JS (tests/test_mask_editor.py), a list kept
in two places is tied by a test, so a new reader or command cannot land undocumented.
"""

import argparse
import re
from pathlib import Path

from stem_explorer.cli import build_parser
from stem_explorer.io import readers

README = Path(__file__).resolve().parents[1] / "README.md"


def table_rows(heading: str) -> list[list[str]]:
    """The cells of the body rows of the first table under ``## heading``."""
    text = README.read_text()
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no section '## {heading}'"
    rows = [line.strip().strip("|").split("|") for line in match[1].splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]  # after the header and its rule


def test_readme_lists_every_built_in_reader_with_its_suffixes():
    documented = {}
    for name, suffixes, _what in table_rows("Readers"):
        documented[name.strip("`")] = tuple(re.findall(r"`([^`]+)`", suffixes))
    built_in = {p.name: tuple(p.suffixes) for p in readers() if p.open.__module__.startswith("stem_explorer.")}
    assert documented == built_in


def test_readme_lists_every_command():
    (subcommands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    documented = [re.fullmatch(r"`stem-explorer (\S+)`", row[0])[1] for row in table_rows("Command line")]
    assert sorted(documented) == sorted(subcommands.choices)

"""Helpers shared by the ingestion targets (:mod:`.local_store`, :mod:`.hdfs.store`)."""

from __future__ import annotations

import json
from typing import Union

from ..errors import FormatError


def paths_overlap(a: str, b: str) -> bool:
    """Whether POSIX-style paths ``a`` and ``b`` are the same or one lies inside the other."""
    a, b = a.rstrip("/") + "/", b.rstrip("/") + "/"
    return a.startswith(b) or b.startswith(a)


def parse_json(data: Union[str, bytes], where: str) -> dict:
    """``data`` parsed, or a FormatError naming ``where``."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise FormatError(
            f"{where} is not valid JSON ({exc}); ingestion wrote it only if it is intact: move it "
            f"away (or delete it) and re-run"
        ) from None

"""Parameters that say where: detector masks (the Explorer takes them from the mask
editor), scan positions and scan regions (from clicks on the navigation view).
See :mod:`.params` for what a declaration gives."""

from __future__ import annotations

import numpy as np

from .. import masks as mask_lib
from ..errors import MaskError
from ..results import check_name
from .params import Param, cli_number, is_whole, json_words


def _as_mask(value, param: Param):
    if isinstance(value, mask_lib.Mask):
        return value
    if isinstance(value, dict):
        try:
            return mask_lib.from_dict(value)
        except MaskError as exc:
            raise MaskError(f"{param.owner} {param.name}: {exc}") from None
    raise param.error(value, "build masks with stem_explorer.masks, e.g. Disk(64, 64, 10), or pass their to_dict()")


class MaskParam(Param):
    """One detector mask (:mod:`stem_explorer.masks`); a dict is its ``to_dict()`` form.
    The Explorer takes it from the mask editor."""

    kind = "mask"
    _schema = {"$ref": mask_lib.load_schema()["$id"]}

    def _describe(self) -> str:
        return "a detector mask (Disk, Ring, ... or its to_dict() description)"

    def _check(self, value):
        return _as_mask(value, self)

    def _to_json(self, value):
        return value.to_dict()

    def code(self, value) -> str:
        return _mask_code(value)

    def _parse_words(self, words, option):
        return json_words(words, option)

    def cli_metavar(self) -> str:
        return "JSON"


def _mask_code(mask) -> str:
    return f"masks.from_dict({mask.to_dict()!r})"


class Masks(Param):
    """Detector masks: one mask, a list of masks, or a ``{name: mask}`` dict. The
    Explorer passes the mask editor's mask as ``{"image": mask}``."""

    kind = "masks"

    @property
    def _schema(self) -> dict:
        mask = MaskParam._schema
        return {"anyOf": [
            mask,
            {"type": "array", "items": mask, "minItems": 1},
            {"type": "object", "additionalProperties": mask, "minProperties": 1},
        ]}

    def _describe(self) -> str:
        return "a detector mask, a non-empty list of masks or a non-empty {name: mask} dict"

    def _check(self, value):
        if isinstance(value, dict) and "kind" not in value:
            if not value:
                raise self.error(value, "give at least one mask")
            # the keys name the result arrays: refused now, not when the results are saved
            return {check_name(str(k), "a mask name"): _as_mask(v, self) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            if not value:
                raise self.error(value, "give at least one mask")
            return [_as_mask(v, self) for v in value]
        return _as_mask(value, self)

    def _to_json(self, value):
        if isinstance(value, dict):
            return {k: m.to_dict() for k, m in value.items()}
        if isinstance(value, list):
            return [m.to_dict() for m in value]
        return value.to_dict()

    def code(self, value) -> str:
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k!r}: {_mask_code(m)}" for k, m in value.items()) + "}"
        if isinstance(value, list):
            return "[" + ", ".join(_mask_code(m) for m in value) + "]"
        return _mask_code(value)

    def _parse_words(self, words, option):
        return json_words(words, option)

    def cli_metavar(self) -> str:
        return "JSON"


class Positions(Param):
    """Scan positions: one position or a list, each with one index per scan axis (a
    plain integer for 1-D scans)."""

    kind = "positions"
    _schema = {"anyOf": [
        {"type": "integer"},
        {"type": "array", "items": {"type": "integer"}, "minItems": 1},
        {"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "minItems": 1}, "minItems": 1},
    ]}

    def _describe(self) -> str:
        return "a scan position or a list of them, each with one integer index per scan axis"

    def _check(self, value):
        # the structure only (as the schema does); the number of indices per position
        # depends on the scan and is the analysis's validate()
        value = value.tolist() if isinstance(value, np.ndarray) else value
        if is_whole(value):
            return int(value)
        if isinstance(value, (list, tuple)) and value:
            if all(is_whole(v) for v in value):
                return [int(v) for v in value]
            if all(isinstance(v, (list, tuple)) and v and all(is_whole(i) for i in v) for v in value):
                return [[int(i) for i in v] for v in value]
        raise self.error(value)

    def parse_cli(self, occurrences, option):
        # each occurrence is one position: --position 3 4 --position 5 6
        return [[int(cli_number(w, option)) for w in words] for words in occurrences]

    def cli_metavar(self) -> str:
        return "INDEX"


class ScanRoi(Param):
    """A region of the scan: a mask drawn in scan coordinates (rows, columns of the
    scan) or a boolean array of the scan's shape."""

    kind = "scan_roi"

    @property
    def _schema(self) -> dict:
        row = {"type": "array", "items": {"type": "boolean"}, "minItems": 1}
        return {"anyOf": [MaskParam._schema, row, {"type": "array", "items": row, "minItems": 1}]}

    def _describe(self) -> str:
        return "a mask in scan coordinates (e.g. Rectangle(y0, x0, height, width)) or a boolean array of the scan's shape"

    def _check(self, value):
        if isinstance(value, (mask_lib.Mask, dict)):
            return _as_mask(value, self)
        try:
            array = np.asarray(value)
        except ValueError:  # ragged rows
            raise self.error(value) from None
        if array.ndim not in (1, 2) or array.size == 0 or array.dtype != bool:
            raise self.error(value, "a boolean array: use roi > 0 for a numeric one")
        return array

    def _to_json(self, value):
        return value.to_dict() if isinstance(value, mask_lib.Mask) else value.tolist()

    def code(self, value) -> str:
        return _mask_code(value) if isinstance(value, mask_lib.Mask) else f"np.array({value.tolist()!r})"

    def _parse_words(self, words, option):
        if len(words) == 4:
            try:
                return mask_lib.Rectangle(*(float(w) for w in words))
            except ValueError:
                pass
        return json_words(words, option)

    def cli_metavar(self) -> str:
        return "Y0 X0 H W|JSON"

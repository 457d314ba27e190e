"""Images as files: colour-mapped PNGs of what a view shows."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from .._atomic import atomic_write


@lru_cache(maxsize=None)
def colormap_lut(name: str) -> np.ndarray:
    """A 256 x 3 uint8 lookup table interpolated from the anchors in ``colormaps.json``."""
    anchors = json.loads(resources.files(__package__).joinpath("colormaps.json").read_text())
    if name not in anchors or name.startswith("_"):
        names = [k for k in anchors if not k.startswith("_")]
        raise ValueError(f"unknown colour map {name!r}; choose one of {names}")
    rgb = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in anchors[name]], dtype=np.float64)
    stops = np.linspace(0.0, 1.0, len(rgb))
    t = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(t, stops, rgb[:, i]) for i in range(3)], axis=1).round().astype(np.uint8)


def colorize(values: np.ndarray, vmin: float, vmax: float, colormap: str) -> np.ndarray:
    """RGBA uint8 image: ``values`` mapped through the colour map; NaN transparent."""
    values = np.asarray(values, dtype=np.float64)
    scaled = np.clip((values - vmin) / (vmax - vmin), 0.0, 1.0)
    index = np.where(np.isfinite(scaled), scaled * 255, 0).round().astype(np.uint8)
    rgba = np.empty(values.shape + (4,), np.uint8)
    rgba[..., :3] = colormap_lut(colormap)[index]
    rgba[..., 3] = np.where(np.isfinite(values), 255, 0)
    return rgba


def save_png(path, values: np.ndarray, vmin: float, vmax: float, colormap: str) -> Path:
    """Write ``values`` colour-mapped as a PNG (atomically: temporary file, then rename)."""
    from PIL import Image

    path = Path(path)
    rgba = colorize(values, vmin, vmax, colormap)
    with atomic_write(path) as tmp:
        Image.fromarray(rgba, mode="RGBA").save(tmp, format="PNG")
    return path

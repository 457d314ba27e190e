// Colour maps as 256-entry lookup tables, interpolated linearly (in sRGB) between the
// evenly spaced anchor colours of stem_explorer/widgets/colormaps.json (shared with the
// Python side, which colours exported PNGs the same way).
import anchors from "../../stem_explorer/widgets/colormaps.json" with { type: "json" };

const ANCHORS = Object.fromEntries(Object.entries(anchors).filter(([name]) => !name.startsWith("_")));

/** Names of the available colour maps. */
export const COLORMAP_NAMES = Object.keys(ANCHORS);

function rgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

const cache = new Map();

/**
 * The lookup table of colour map `name`: a Uint8ClampedArray of 256 RGBA entries
 * (alpha 255). Unknown names fall back to viridis.
 */
export function lookupTable(name) {
  const key = name in ANCHORS ? name : "viridis";
  if (!cache.has(key)) {
    const anchors = ANCHORS[key].map(rgb);
    const lut = new Uint8ClampedArray(256 * 4);
    const segments = anchors.length - 1;
    for (let i = 0; i < 256; i++) {
      const t = (i / 255) * segments;
      const k = Math.min(Math.floor(t), segments - 1);
      const f = t - k;
      for (let c = 0; c < 3; c++) {
        lut[4 * i + c] = Math.round(anchors[k][c] + (anchors[k + 1][c] - anchors[k][c]) * f);
      }
      lut[4 * i + 3] = 255;
    }
    cache.set(key, lut);
  }
  return cache.get(key);
}

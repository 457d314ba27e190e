import assert from "node:assert/strict";
import { test } from "node:test";
import { COLORMAP_NAMES, lookupTable } from "../../js/src/colormaps.js";
import { colourise, toFloat32 } from "../../js/src/image.js";

test("colour maps: 256 opaque entries from the first to the last anchor", () => {
  assert.deepEqual(COLORMAP_NAMES, ["viridis", "magma", "inferno", "gray"]);
  for (const name of COLORMAP_NAMES) {
    const lut = lookupTable(name);
    assert.equal(lut.length, 1024);
    for (let i = 3; i < 1024; i += 4) assert.equal(lut[i], 255);
  }
  const gray = lookupTable("gray");
  assert.deepEqual([...gray.slice(0, 3)], [0, 0, 0]);
  assert.deepEqual([...gray.slice(4 * 128, 4 * 128 + 3)], [128, 128, 128]);
  assert.deepEqual([...gray.slice(1020, 1023)], [255, 255, 255]);
  assert.deepEqual([...lookupTable("viridis").slice(0, 3)], [0x44, 0x01, 0x54]);
  assert.equal(lookupTable("no such map"), lookupTable("viridis"));
});

test("toFloat32 reads little-endian float32 from a DataView, aligned or not", () => {
  const buffer = new ArrayBuffer(4 * 3 + 2);
  const view = new DataView(buffer, 2, 12);
  [1.5, -2, 1e30].forEach((v, i) => view.setFloat32(4 * i, v, true));
  assert.deepEqual([...toFloat32(view)], [1.5, -2, Math.fround(1e30)]);
  const aligned = new Float32Array([3, 4]);
  assert.deepEqual([...toFloat32(new DataView(aligned.buffer))], [3, 4]);
  assert.deepEqual([...toFloat32(aligned.buffer)], [3, 4]);
});

test("colourise: linear and log limits, clamping, NaN transparent", () => {
  const lut = lookupTable("gray");
  const values = new Float32Array([0, 5, 10, 20, -3, NaN, Infinity]);
  const out = new Uint8ClampedArray(values.length * 4);
  colourise(values, { vmin: 0, vmax: 10, log: false, lut }, out);
  const red = (i) => out[4 * i];
  const alpha = (i) => out[4 * i + 3];
  assert.deepEqual([0, 1, 2, 3, 4].map(red), [0, 128, 255, 255, 0]);
  assert.equal(alpha(5), 0);
  assert.equal(alpha(6), 0);
  assert.equal(alpha(0), 255);
  colourise(new Float32Array([0, Math.expm1(1), Math.expm1(2)]), { vmin: 0, vmax: Math.expm1(2), log: true, lut }, out);
  assert.deepEqual([0, 1, 2].map(red), [0, 128, 255]);
  // Equal limits do not divide by zero.
  colourise(new Float32Array([7, 7]), { vmin: 7, vmax: 7, log: false, lut }, out);
  assert.deepEqual([0, 1].map(red), [0, 0]);
});

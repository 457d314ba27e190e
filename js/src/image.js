// Detector images: float32 bytes from the kernel -> RGBA pixels through a colour map.

/**
 * A Float32Array view of little-endian float32 bytes (a DataView, ArrayBuffer or typed
 * array, as anywidget delivers a Bytes trait). Copies only when the bytes are not
 * 4-byte aligned.
 */
export function toFloat32(bytes) {
  if (bytes instanceof ArrayBuffer) return new Float32Array(bytes, 0, bytes.byteLength >> 2);
  const { buffer, byteOffset, byteLength } = bytes;
  if (byteOffset % 4 === 0) return new Float32Array(buffer, byteOffset, byteLength >> 2);
  return new Float32Array(buffer.slice(byteOffset, byteOffset + byteLength - (byteLength % 4)));
}

function display(value, log) {
  return log ? Math.log1p(Math.max(value, 0)) : value;
}

/**
 * Fill `out` (Uint8ClampedArray, 4 bytes per value) with the colours of `values`:
 * each value (through log1p(max(v, 0)) when `log`) is mapped linearly from
 * [vmin, vmax] (transformed the same way) onto the 256 entries of `lut`, clamped at both
 * ends. Non-finite values become transparent.
 */
export function colourise(values, { vmin, vmax, log, lut }, out) {
  const lo = display(vmin, log);
  const hi = display(vmax, log);
  const k = hi > lo ? 255 / (hi - lo) : 0;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    const o = 4 * i;
    if (!Number.isFinite(v)) {
      out[o] = out[o + 1] = out[o + 2] = out[o + 3] = 0;
      continue;
    }
    let index = Math.round((display(v, log) - lo) * k);
    index = index < 0 ? 0 : index > 255 ? 255 : index;
    out[o] = lut[4 * index];
    out[o + 1] = lut[4 * index + 1];
    out[o + 2] = lut[4 * index + 2];
    out[o + 3] = 255;
  }
  return out;
}

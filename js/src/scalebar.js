// Calibrated coordinates on the detector canvas: a scale bar or rulers along two edges.
// A calibration is {size: [sy, sx], unit, style: "axes" | "scale bar"}: the coordinate
// of pixel i along an axis of n pixels is (i - (n - 1) / 2) * size, measured from the
// detector's centre as in the results (stem_explorer.io.calibration.detector_axes).

import { toCss, toImage } from "./view.js";

/** The share of the visible width a scale bar may take at most. */
export const SCALE_BAR_SHARE = 0.3;
const TEXT = "#ffffff";
const HALO = "rgba(0, 0, 0, 0.8)";

/** The longest of 1, 2 and 5 times a power of ten that is at most `limit` (> 0). */
export function niceLength(limit) {
  if (!(limit > 0) || !Number.isFinite(limit)) return NaN;
  const power = 10 ** Math.floor(Math.log10(limit));
  for (const factor of [5, 2, 1]) if (factor * power <= limit * (1 + 1e-12)) return factor * power;
  return power;
}

/** `value` with 4 significant digits, without trailing zeros. */
export function formatNumber(value) {
  if (!Number.isFinite(value)) return String(value);
  return String(Number(value.toPrecision(4)));
}

/** Whether `calibration` calibrates the detector. */
export function isCalibrated(calibration) {
  return Boolean(calibration && calibration.unit && calibration.size?.length === 2 && calibration.size.every((s) => s > 0));
}

/** The calibrated coordinate {y, x} of the pixel-coordinate point p on a rows x cols detector. */
export function calibratedPoint(p, rows, cols, calibration) {
  const [sy, sx] = calibration.size;
  return { y: (p.y - (rows - 1) / 2) * sy, x: (p.x - (cols - 1) / 2) * sx };
}

function label(ctx, text, x, y, align, baseline) {
  ctx.font = "bold 11px sans-serif";
  ctx.textAlign = align;
  ctx.textBaseline = baseline;
  ctx.lineWidth = 3;
  ctx.strokeStyle = HALO;
  ctx.strokeText(text, x, y);
  ctx.fillStyle = TEXT;
  ctx.fillText(text, x, y);
}

function line(ctx, x0, y0, x1, y1, width) {
  ctx.beginPath();
  ctx.moveTo(x0, y0);
  ctx.lineTo(x1, y1);
  ctx.lineCap = "butt";
  ctx.lineWidth = width + 2;
  ctx.strokeStyle = HALO;
  ctx.stroke();
  ctx.lineWidth = width;
  ctx.strokeStyle = TEXT;
  ctx.stroke();
}

/**
 * The scale bar of the current view: {length (calibrated), cssLength, text}, measured
 * along x, at most SCALE_BAR_SHARE of the canvas width.
 */
export function scaleBar(view, width, calibration) {
  const perCss = calibration.size[1] / view.scale;
  const length = niceLength(SCALE_BAR_SHARE * width * perCss);
  return { length, cssLength: length / perCss, text: `${formatNumber(length)} ${calibration.unit}` };
}

function drawBar(ctx, view, width, height, calibration) {
  const bar = scaleBar(view, width, calibration);
  if (!Number.isFinite(bar.length)) return;
  const x0 = 10;
  const y = height - 12;
  line(ctx, x0, y, x0 + bar.cssLength, y, 4);
  label(ctx, bar.text, x0 + bar.cssLength / 2, y - 5, "center", "bottom");
}

/** Round calibrated values every `step` from `from` to `to`. */
function ticks(from, to, step) {
  const out = [];
  for (let v = Math.ceil(from / step) * step; v <= to + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return out;
}

function drawRulers(ctx, view, rows, cols, width, height, calibration) {
  const [sy, sx] = calibration.size;
  const topLeft = calibratedPoint(toImage(view, 0, 0), rows, cols, calibration);
  const bottomRight = calibratedPoint(toImage(view, width, height), rows, cols, calibration);
  const step = niceLength(((bottomRight.x - topLeft.x) / 5) * 1.0001);
  if (!Number.isFinite(step)) return;
  for (const v of ticks(topLeft.x, bottomRight.x, step)) {
    const x = toCss(view, 0, v / sx + (cols - 1) / 2).x;
    line(ctx, x, height, x, height - 6, 1);
    label(ctx, formatNumber(v), x, height - 8, "center", "bottom");
  }
  const stepY = niceLength(((bottomRight.y - topLeft.y) / 5) * 1.0001);
  for (const v of ticks(topLeft.y, bottomRight.y, stepY)) {
    const y = toCss(view, v / sy + (rows - 1) / 2, 0).y;
    line(ctx, 0, y, 6, y, 1);
    label(ctx, formatNumber(v), 8, y, "left", "middle");
  }
  label(ctx, calibration.unit, width - 4, 4, "right", "top");
}

/** Draw the calibration's scale bar or rulers over the scene (nothing when uncalibrated). */
export function drawCalibration(ctx, { view, rows, cols, width, height, calibration }) {
  if (!view || !isCalibrated(calibration)) return;
  ctx.save();
  if (calibration.style === "scale bar") drawBar(ctx, view, width, height, calibration);
  else drawRulers(ctx, view, rows, cols, width, height, calibration);
  ctx.restore();
}

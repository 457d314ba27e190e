// Drawing the editor's canvas: the detector image first, then the shapes on top.
// Everything is drawn in CSS pixels; the caller sets the device-pixel-ratio transform.

import { handles, spotCentres } from "./geometry.js";
import { drawCalibration } from "./scalebar.js";
import { toCss } from "./view.js";

const STYLE = {
  background: "#161616",
  detector: "#242424",
  halo: "rgba(0, 0, 0, 0.75)",
  add: { stroke: "#3fd0ff", fill: "rgba(63, 208, 255, 0.13)", dash: [] },
  subtract: { stroke: "#ff5c5c", fill: "rgba(255, 92, 92, 0.16)", dash: [5, 4] },
  handle: { fill: "#ffffff", stroke: "#111111", size: 7 },
  grid: "rgba(255, 255, 255, 0.12)",
};

/** Pixels per image pixel above which the pixel grid is drawn. */
const GRID_SCALE = 12;

function pathFor(ctx, shape, view) {
  const s = view.scale;
  const circle = (cy, cx, r) => {
    const c = toCss(view, cy, cx);
    ctx.moveTo(c.x + r * s, c.y);
    ctx.arc(c.x, c.y, r * s, 0, 2 * Math.PI);
  };
  switch (shape.kind) {
    case "disk":
      circle(shape.cy, shape.cx, shape.radius);
      break;
    case "ring":
      circle(shape.cy, shape.cx, shape.r_outer);
      if (shape.r_inner > 0) circle(shape.cy, shape.cx, shape.r_inner);
      break;
    case "rectangle": {
      const a = toCss(view, shape.y0, shape.x0);
      ctx.rect(a.x, a.y, shape.width * s, shape.height * s);
      break;
    }
    case "polygon":
      shape.vertices.forEach(([y, x], i) => {
        const c = toCss(view, y, x);
        if (i === 0) ctx.moveTo(c.x, c.y);
        else ctx.lineTo(c.x, c.y);
      });
      ctx.closePath();
      break;
    case "symmetric_spots":
      for (const c of spotCentres(shape)) circle(c.y, c.x, shape.radius);
      break;
    default:
      break;
  }
}

function strokeTwice(ctx, width, colour, dash) {
  ctx.setLineDash([]);
  ctx.lineWidth = width + 2;
  ctx.strokeStyle = STYLE.halo;
  ctx.stroke();
  ctx.setLineDash(dash);
  ctx.lineWidth = width;
  ctx.strokeStyle = colour;
  ctx.stroke();
  ctx.setLineDash([]);
}

function drawPoint(ctx, shape, view, style, width) {
  const s = view.scale;
  const c = toCss(view, shape.y, shape.x);
  const px = toCss(view, Math.floor(shape.y + 0.5), Math.floor(shape.x + 0.5));
  ctx.beginPath();
  ctx.rect(px.x - s / 2, px.y - s / 2, s, s);
  ctx.fillStyle = style.fill;
  ctx.fill();
  if (s >= 4) strokeTwice(ctx, 1, style.stroke, style.dash);
  const arm = 7;
  ctx.beginPath();
  ctx.moveTo(c.x - arm, c.y);
  ctx.lineTo(c.x + arm, c.y);
  ctx.moveTo(c.x, c.y - arm);
  ctx.lineTo(c.x, c.y + arm);
  strokeTwice(ctx, width, style.stroke, []);
}

function drawCentreMark(ctx, cy, cx, view, style) {
  const c = toCss(view, cy, cx);
  ctx.beginPath();
  ctx.moveTo(c.x - 4, c.y);
  ctx.lineTo(c.x + 4, c.y);
  ctx.moveTo(c.x, c.y - 4);
  ctx.lineTo(c.x, c.y + 4);
  strokeTwice(ctx, 1, style.stroke, []);
}

/** Draw one shape; `selected` adds its handles, `draft` marks a shape being drawn. */
export function drawShape(ctx, shape, view, { selected = false, draft = false } = {}) {
  const style = shape.op === "subtract" ? STYLE.subtract : STYLE.add;
  const width = selected ? 2.5 : 1.5;
  ctx.save();
  if (draft) ctx.globalAlpha = 0.8;
  if (shape.kind === "point") {
    drawPoint(ctx, shape, view, style, width);
  } else {
    ctx.beginPath();
    pathFor(ctx, shape, view);
    ctx.fillStyle = style.fill;
    ctx.fill("evenodd");
    strokeTwice(ctx, width, style.stroke, style.dash);
    if (shape.kind === "ring" || shape.kind === "disk" || shape.kind === "symmetric_spots") {
      drawCentreMark(ctx, shape.cy, shape.cx, view, style);
    }
    if (shape.kind === "symmetric_spots" && shape.n > 0) {
      const first = spotCentres(shape)[0];
      const a = toCss(view, shape.cy, shape.cx);
      const b = toCss(view, first.y, first.x);
      ctx.beginPath();
      ctx.moveTo(a.x, a.y);
      ctx.lineTo(b.x, b.y);
      strokeTwice(ctx, 1, style.stroke, [2, 3]);
    }
  }
  if (selected) drawHandles(ctx, shape, view);
  ctx.restore();
}

function drawHandles(ctx, shape, view) {
  const size = STYLE.handle.size;
  for (const h of handles(shape)) {
    const c = toCss(view, h.y, h.x);
    ctx.beginPath();
    ctx.rect(c.x - size / 2, c.y - size / 2, size, size);
    ctx.fillStyle = STYLE.handle.fill;
    ctx.fill();
    ctx.lineWidth = 1;
    ctx.strokeStyle = STYLE.handle.stroke;
    ctx.stroke();
  }
}

/** Draw the vertices placed so far of a polygon being drawn, and the edge to the cursor. */
export function drawPolygonDraft(ctx, draft, view) {
  const style = draft.op === "subtract" ? STYLE.subtract : STYLE.add;
  const points = draft.cursor ? [...draft.vertices, [draft.cursor.y, draft.cursor.x]] : draft.vertices;
  ctx.save();
  ctx.beginPath();
  points.forEach(([y, x], i) => {
    const c = toCss(view, y, x);
    if (i === 0) ctx.moveTo(c.x, c.y);
    else ctx.lineTo(c.x, c.y);
  });
  strokeTwice(ctx, 1.5, style.stroke, [4, 3]);
  draft.vertices.forEach(([y, x], i) => {
    const c = toCss(view, y, x);
    ctx.beginPath();
    ctx.arc(c.x, c.y, i === 0 ? 5 : 3, 0, 2 * Math.PI);
    ctx.fillStyle = i === 0 ? STYLE.handle.fill : style.stroke;
    ctx.fill();
    ctx.lineWidth = 1;
    ctx.strokeStyle = STYLE.handle.stroke;
    ctx.stroke();
  });
  ctx.restore();
}

function drawGrid(ctx, view, rows, cols, width, height) {
  const s = view.scale;
  const first = (offset) => Math.max(0, Math.floor((-offset) / s + 0.5));
  const y0 = first(view.offsetY);
  const x0 = first(view.offsetX);
  const y1 = Math.min(rows, Math.ceil((height - view.offsetY) / s + 0.5));
  const x1 = Math.min(cols, Math.ceil((width - view.offsetX) / s + 0.5));
  ctx.save();
  ctx.beginPath();
  for (let y = y0; y <= y1; y++) {
    const c = toCss(view, y - 0.5, 0);
    ctx.moveTo(toCss(view, 0, x0 - 0.5).x, Math.round(c.y) + 0.5);
    ctx.lineTo(toCss(view, 0, x1 - 0.5).x, Math.round(c.y) + 0.5);
  }
  for (let x = x0; x <= x1; x++) {
    const c = toCss(view, 0, x - 0.5);
    ctx.moveTo(Math.round(c.x) + 0.5, toCss(view, y0 - 0.5, 0).y);
    ctx.lineTo(Math.round(c.x) + 0.5, toCss(view, y1 - 0.5, 0).y);
  }
  ctx.lineWidth = 1;
  ctx.strokeStyle = STYLE.grid;
  ctx.stroke();
  ctx.restore();
}

/**
 * Draw the whole scene: {width, height, view, rows, cols, image (a canvas of cols x rows
 * pixels, or null), shapes, selected, draft (a shape being drawn, or null),
 * polygonDraft ({vertices, cursor, op}, or null), calibration (scalebar.js, or null)}.
 */
export function drawScene(ctx, scene) {
  const { width, height, view, rows, cols } = scene;
  ctx.fillStyle = STYLE.background;
  ctx.fillRect(0, 0, width, height);
  if (!(rows > 0 && cols > 0)) return;
  const s = view.scale;
  const left = view.offsetX - s / 2;
  const top = view.offsetY - s / 2;
  ctx.fillStyle = STYLE.detector;
  ctx.fillRect(left, top, cols * s, rows * s);
  if (scene.image) {
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(scene.image, left, top, cols * s, rows * s);
  }
  if (s >= GRID_SCALE) drawGrid(ctx, view, rows, cols, width, height);
  scene.shapes.forEach((shape, i) => {
    if (i !== scene.selected) drawShape(ctx, shape, view);
  });
  const chosen = scene.shapes[scene.selected];
  if (chosen) drawShape(ctx, chosen, view, { selected: true });
  if (scene.draft) drawShape(ctx, scene.draft, view, { draft: true });
  if (scene.polygonDraft) drawPolygonDraft(ctx, scene.polygonDraft, view);
  drawCalibration(ctx, scene);
}

// Shape geometry of the mask editor: creation from drags, handles, hit tests, checks.
//
// Shapes are the mask dicts of stem_explorer.masks (row-first: y is the row, x the
// column; pixel (y, x) has its centre at the integer point (y, x)) plus the editor key
// "op" ("add" | "subtract"). Every function here is pure: it never mutates its
// arguments and returns new shapes.

/** Shape kinds the editor can draw and edit. */
export const EDITABLE_KINDS = ["disk", "ring", "rectangle", "polygon", "point", "symmetric_spots"];

/** Smallest radius, width or height a handle drag can produce (pixels). */
export const MIN_SIZE = 0.5;

const DEG = Math.PI / 180;

/** Round to 1/1000 pixel so that the JSON of a shape stays readable. */
export function tidy(value) {
  return Math.round(value * 1000) / 1000;
}

function hypot(ay, ax, by, bx) {
  return Math.hypot(by - ay, bx - ax);
}

/** Centres of the n spots of a symmetric_spots shape, in angle order. */
export function spotCentres(shape) {
  const out = [];
  const angle = shape.angle ?? 0;
  for (let k = 0; k < shape.n; k++) {
    const theta = (angle + (k * 360) / shape.n) * DEG;
    out.push({ y: shape.cy + shape.distance * Math.sin(theta), x: shape.cx + shape.distance * Math.cos(theta) });
  }
  return out;
}

/** Bounding box {ymin, ymax, xmin, xmax} of a shape in pixel coordinates. */
export function bounds(shape) {
  switch (shape.kind) {
    case "disk":
    case "ring": {
      const r = shape.kind === "disk" ? shape.radius : shape.r_outer;
      return { ymin: shape.cy - r, ymax: shape.cy + r, xmin: shape.cx - r, xmax: shape.cx + r };
    }
    case "rectangle":
      return { ymin: shape.y0, ymax: shape.y0 + shape.height, xmin: shape.x0, xmax: shape.x0 + shape.width };
    case "polygon": {
      const ys = shape.vertices.map((v) => v[0]);
      const xs = shape.vertices.map((v) => v[1]);
      return { ymin: Math.min(...ys), ymax: Math.max(...ys), xmin: Math.min(...xs), xmax: Math.max(...xs) };
    }
    case "point":
      return { ymin: shape.y, ymax: shape.y, xmin: shape.x, xmax: shape.x };
    case "symmetric_spots": {
      const c = spotCentres(shape);
      const r = shape.radius;
      return {
        ymin: Math.min(...c.map((p) => p.y)) - r,
        ymax: Math.max(...c.map((p) => p.y)) + r,
        xmin: Math.min(...c.map((p) => p.x)) - r,
        xmax: Math.max(...c.map((p) => p.x)) + r,
      };
    }
    default:
      throw new Error(`unknown shape kind ${shape.kind}`);
  }
}

/** The shape moved by (dy, dx) pixels. */
export function translate(shape, dy, dx) {
  switch (shape.kind) {
    case "rectangle":
      return { ...shape, y0: tidy(shape.y0 + dy), x0: tidy(shape.x0 + dx) };
    case "polygon":
      return { ...shape, vertices: shape.vertices.map(([y, x]) => [tidy(y + dy), tidy(x + dx)]) };
    case "point":
      return { ...shape, y: tidy(shape.y + dy), x: tidy(shape.x + dx) };
    default:
      return { ...shape, cy: tidy(shape.cy + dy), cx: tidy(shape.cx + dx) };
  }
}

/** Drag handles of a shape: [{name, y, x}] in pixel coordinates. */
export function handles(shape) {
  switch (shape.kind) {
    case "disk":
      return [{ name: "radius", y: shape.cy, x: shape.cx + shape.radius }];
    case "ring":
      return [
        { name: "outer", y: shape.cy, x: shape.cx + shape.r_outer },
        { name: "inner", y: shape.cy, x: shape.cx - shape.r_inner },
      ];
    case "rectangle": {
      const { y0, x0 } = shape;
      const y1 = y0 + shape.height;
      const x1 = x0 + shape.width;
      return [
        { name: "nw", y: y0, x: x0 },
        { name: "ne", y: y0, x: x1 },
        { name: "sw", y: y1, x: x0 },
        { name: "se", y: y1, x: x1 },
      ];
    }
    case "polygon":
      return shape.vertices.map(([y, x], i) => ({ name: `v${i}`, y, x }));
    case "symmetric_spots": {
      const first = spotCentres(shape)[0];
      const theta = ((shape.angle ?? 0) + 90) * DEG;
      return [
        { name: "distance", y: first.y, x: first.x },
        { name: "radius", y: first.y + shape.radius * Math.sin(theta), x: first.x + shape.radius * Math.cos(theta) },
      ];
    }
    default:
      return [];
  }
}

/**
 * The shape after its handle `name` was dragged to point p ({y, x}).
 * Sizes never drop below MIN_SIZE; a ring keeps r_inner < r_outer.
 */
export function dragHandle(shape, name, p) {
  switch (shape.kind) {
    case "disk":
      return { ...shape, radius: tidy(Math.max(MIN_SIZE, hypot(shape.cy, shape.cx, p.y, p.x))) };
    case "ring": {
      const d = hypot(shape.cy, shape.cx, p.y, p.x);
      if (name === "outer") {
        return { ...shape, r_outer: tidy(Math.max(d, shape.r_inner + MIN_SIZE, MIN_SIZE)) };
      }
      return { ...shape, r_inner: tidy(Math.min(d, shape.r_outer - MIN_SIZE)) };
    }
    case "rectangle": {
      let y0 = shape.y0;
      let x0 = shape.x0;
      let y1 = y0 + shape.height;
      let x1 = x0 + shape.width;
      if (name.includes("n")) y0 = p.y;
      else y1 = p.y;
      if (name.includes("w")) x0 = p.x;
      else x1 = p.x;
      return rectangleFromCorners(shape, { y: y0, x: x0 }, { y: y1, x: x1 });
    }
    case "polygon": {
      const index = Number(name.slice(1));
      const vertices = shape.vertices.map((v, i) => (i === index ? [tidy(p.y), tidy(p.x)] : v));
      return { ...shape, vertices };
    }
    case "symmetric_spots": {
      if (name === "distance") {
        const dy = p.y - shape.cy;
        const dx = p.x - shape.cx;
        return { ...shape, distance: tidy(Math.hypot(dy, dx)), angle: tidy(Math.atan2(dy, dx) / DEG) };
      }
      const first = spotCentres(shape)[0];
      return { ...shape, radius: tidy(Math.max(MIN_SIZE, hypot(first.y, first.x, p.y, p.x))) };
    }
    default:
      return shape;
  }
}

function rectangleFromCorners(base, a, b) {
  const height = Math.max(MIN_SIZE, Math.abs(b.y - a.y));
  const width = Math.max(MIN_SIZE, Math.abs(b.x - a.x));
  return { ...base, y0: tidy(Math.min(a.y, b.y)), x0: tidy(Math.min(a.x, b.x)), height: tidy(height), width: tidy(width) };
}

/**
 * A new shape from a drag of tool `tool` from point a to point b, or null when the drag
 * is shorter than `minDrag` pixels. `spotsN` is the n of new symmetric spots.
 */
export function shapeFromDrag(tool, a, b, { minDrag = 1, spotsN = 6 } = {}) {
  const d = hypot(a.y, a.x, b.y, b.x);
  const cy = tidy(a.y);
  const cx = tidy(a.x);
  switch (tool) {
    case "disk":
      return d < minDrag ? null : { kind: "disk", cy, cx, radius: tidy(d) };
    case "ring":
      return d < minDrag ? null : { kind: "ring", cy, cx, r_inner: tidy(d / 2), r_outer: tidy(d) };
    case "rectangle":
      if (Math.abs(b.y - a.y) < minDrag || Math.abs(b.x - a.x) < minDrag) return null;
      return rectangleFromCorners({ kind: "rectangle" }, a, b);
    case "spots":
      if (d < minDrag) return null;
      return {
        kind: "symmetric_spots",
        cy,
        cx,
        distance: tidy(d),
        radius: tidy(Math.max(MIN_SIZE, d / 5)),
        n: spotsN,
        angle: tidy(Math.atan2(b.y - a.y, b.x - a.x) / DEG),
      };
    default:
      throw new Error(`tool ${tool} does not draw by dragging`);
  }
}

/** Vertices with consecutive near-duplicates (closer than eps) and a repeated first vertex removed. */
export function distinctVertices(vertices, eps = 1e-6) {
  const out = [];
  for (const v of vertices) {
    const last = out[out.length - 1];
    if (!last || hypot(last[0], last[1], v[0], v[1]) > eps) out.push(v);
  }
  while (out.length > 1 && hypot(out[0][0], out[0][1], out[out.length - 1][0], out[out.length - 1][1]) <= eps) {
    out.pop();
  }
  return out;
}

function twiceArea(vertices) {
  let sum = 0;
  for (let i = 0; i < vertices.length; i++) {
    const [ya, xa] = vertices[i];
    const [yb, xb] = vertices[(i + 1) % vertices.length];
    sum += ya * xb - yb * xa;
  }
  return sum;
}

function insidePolygon(vertices, p) {
  let inside = false;
  for (let i = 0, j = vertices.length - 1; i < vertices.length; j = i++) {
    const [ya, xa] = vertices[i];
    const [yb, xb] = vertices[j];
    if (ya > p.y !== yb > p.y && p.x < xa + ((p.y - ya) * (xb - xa)) / (yb - ya)) inside = !inside;
  }
  return inside;
}

function distanceToSegment(p, a, b) {
  const dy = b[0] - a[0];
  const dx = b[1] - a[1];
  const len2 = dy * dy + dx * dx;
  const t = len2 === 0 ? 0 : Math.max(0, Math.min(1, ((p.y - a[0]) * dy + (p.x - a[1]) * dx) / len2));
  return hypot(p.y, p.x, a[0] + t * dy, a[1] + t * dx);
}

/** Whether point p hits the body of the shape, with a tolerance of `tol` pixels. */
export function hitsShape(shape, p, tol = 0) {
  switch (shape.kind) {
    case "disk":
      return hypot(shape.cy, shape.cx, p.y, p.x) <= shape.radius + tol;
    case "ring": {
      // Only the band counts, so a disk inside the ring's hole can still be picked.
      const d = hypot(shape.cy, shape.cx, p.y, p.x);
      return d >= shape.r_inner - tol && d <= shape.r_outer + tol;
    }
    case "rectangle":
      return (
        p.y >= shape.y0 - tol && p.y <= shape.y0 + shape.height + tol &&
        p.x >= shape.x0 - tol && p.x <= shape.x0 + shape.width + tol
      );
    case "polygon": {
      const v = shape.vertices;
      if (insidePolygon(v, p)) return true;
      return v.some((a, i) => distanceToSegment(p, a, v[(i + 1) % v.length]) <= tol);
    }
    case "point":
      return Math.abs(p.y - shape.y) <= Math.max(tol, 0.5) && Math.abs(p.x - shape.x) <= Math.max(tol, 0.5);
    case "symmetric_spots":
      return (
        hypot(shape.cy, shape.cx, p.y, p.x) <= tol ||
        spotCentres(shape).some((c) => hypot(c.y, c.x, p.y, p.x) <= shape.radius + tol)
      );
    default:
      return false;
  }
}

/** Index of the topmost (last drawn) shape hit by p, or -1. */
export function pickShape(shapes, p, tol = 0) {
  for (let i = shapes.length - 1; i >= 0; i--) {
    if (hitsShape(shapes[i], p, tol)) return i;
  }
  return -1;
}

/** Name of the handle of `shape` within `tol` pixels of p (the nearest one), or null. */
export function pickHandle(shape, p, tol) {
  let best = null;
  let bestDistance = Infinity;
  for (const h of handles(shape)) {
    const d = hypot(h.y, h.x, p.y, p.x);
    if (d <= tol && d < bestDistance) {
      best = h.name;
      bestDistance = d;
    }
  }
  return best;
}

const NUMBER_FIELDS = {
  disk: ["cy", "cx", "radius"],
  ring: ["cy", "cx", "r_inner", "r_outer"],
  rectangle: ["y0", "x0", "height", "width"],
  point: ["y", "x"],
  symmetric_spots: ["cy", "cx", "distance", "radius", "angle"],
};

function sizeProblem(shape) {
  switch (shape.kind) {
    case "disk":
      return shape.radius > 0 ? null : "needs a positive radius";
    case "ring":
      if (!(shape.r_inner >= 0 && shape.r_outer > 0)) return "needs radii 0 <= r_inner < r_outer";
      return shape.r_inner < shape.r_outer ? null : "needs r_inner smaller than r_outer";
    case "rectangle":
      return shape.height > 0 && shape.width > 0 ? null : "needs a positive height and width";
    case "polygon": {
      const v = distinctVertices(shape.vertices);
      if (v.length < 3) return "needs at least 3 distinct points";
      return twiceArea(v) === 0 ? "has collinear points (zero area)" : null;
    }
    case "symmetric_spots":
      if (!(Number.isInteger(shape.n) && shape.n >= 1)) return "needs a whole number n >= 1 of spots";
      if (!(shape.distance >= 0)) return "needs a distance >= 0";
      return shape.radius > 0 ? null : "needs a positive spot radius";
    default:
      return null;
  }
}

/** Whether no pixel centre (integer point) of a rows x cols detector lies in the bounding box. */
function missesDetector(shape, rows, cols) {
  const b = bounds(shape);
  if (shape.kind === "point") {
    const y = Math.floor(shape.y + 0.5);
    const x = Math.floor(shape.x + 0.5);
    return y < 0 || y >= rows || x < 0 || x >= cols;
  }
  const y0 = Math.max(Math.ceil(b.ymin), 0);
  const y1 = Math.min(Math.floor(b.ymax), rows - 1);
  const x0 = Math.max(Math.ceil(b.xmin), 0);
  const x1 = Math.min(Math.floor(b.xmax), cols - 1);
  return y0 > y1 || x0 > x1;
}

/**
 * Why the editor refuses a shape on a rows x cols detector ("<kind> needs ..."), or null.
 * Mirrors the checks of stem_explorer.widgets.mask_editor, which has the last word.
 */
export function shapeProblem(shape, rows, cols) {
  if (!EDITABLE_KINDS.includes(shape.kind)) return `${shape.kind} shapes cannot be edited here`;
  const numbers = shape.kind === "polygon" ? shape.vertices.flat() : NUMBER_FIELDS[shape.kind].map((f) => shape[f] ?? 0);
  if (!numbers.every(Number.isFinite)) return `${shape.kind} has a value that is not a finite number`;
  const size = sizeProblem(shape);
  if (size) return `${shape.kind} ${size}`;
  if (rows > 0 && cols > 0 && missesDetector(shape, rows, cols)) {
    return `${shape.kind} lies outside the ${rows} x ${cols} detector`;
  }
  return null;
}

function fmt(value, digits = 1) {
  return Number(value).toFixed(digits);
}

/** One-line summary of a shape's parameters for the legend (pixel units, row first). */
export function describe(shape) {
  switch (shape.kind) {
    case "disk":
      return `c (${fmt(shape.cy)}, ${fmt(shape.cx)})  r ${fmt(shape.radius)}`;
    case "ring":
      return `c (${fmt(shape.cy)}, ${fmt(shape.cx)})  r ${fmt(shape.r_inner)}\u2013${fmt(shape.r_outer)}`;
    case "rectangle":
      return `(${fmt(shape.y0)}, ${fmt(shape.x0)})  ${fmt(shape.height)} \u00d7 ${fmt(shape.width)}`;
    case "polygon":
      return `${shape.vertices.length} vertices`;
    case "point":
      return `(${fmt(shape.y)}, ${fmt(shape.x)}) \u2192 px (${Math.floor(shape.y + 0.5)}, ${Math.floor(shape.x + 0.5)})`;
    case "symmetric_spots":
      return `c (${fmt(shape.cy)}, ${fmt(shape.cx)})  n ${shape.n}  d ${fmt(shape.distance)}  r ${fmt(shape.radius)}  \u03b8 ${fmt(shape.angle ?? 0)}\u00b0`;
    default:
      return shape.kind;
  }
}

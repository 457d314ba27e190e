// The view transform between detector pixel coordinates and canvas CSS pixels:
//   css_x = offsetX + scale * x,  css_y = offsetY + scale * y   (x = column, y = row)
// Pixel (y, x) has its centre at the integer point (y, x), so it covers
// [x - 0.5, x + 0.5) x [y - 0.5, y + 0.5) in pixel coordinates.

/** Zoom range relative to the fitted scale. */
export const MIN_ZOOM = 0.25;
export const MAX_ZOOM = 256;

/** The view showing a rows x cols detector whole and centred in a width x height canvas. */
export function fitView(rows, cols, width, height) {
  const scale = Math.min(width / cols, height / rows);
  return {
    scale,
    offsetX: (width - cols * scale) / 2 + scale / 2,
    offsetY: (height - rows * scale) / 2 + scale / 2,
    fitScale: scale,
  };
}

/** The view zoomed by `factor` about the canvas point (cssX, cssY), which stays put. */
export function zoomAt(view, factor, cssX, cssY) {
  const scale = Math.min(Math.max(view.scale * factor, view.fitScale * MIN_ZOOM), view.fitScale * MAX_ZOOM);
  const f = scale / view.scale;
  return {
    ...view,
    scale,
    offsetX: cssX - (cssX - view.offsetX) * f,
    offsetY: cssY - (cssY - view.offsetY) * f,
  };
}

/** The view panned by (dx, dy) CSS pixels. */
export function panBy(view, dx, dy) {
  return { ...view, offsetX: view.offsetX + dx, offsetY: view.offsetY + dy };
}

/** Pixel coordinates {y, x} of the canvas point (cssX, cssY). */
export function toImage(view, cssX, cssY) {
  return { y: (cssY - view.offsetY) / view.scale, x: (cssX - view.offsetX) / view.scale };
}

/** Canvas CSS coordinates {x, y} of the pixel-coordinate point (y, x). */
export function toCss(view, y, x) {
  return { x: view.offsetX + view.scale * x, y: view.offsetY + view.scale * y };
}

/** CSS size {width, height} of the canvas: longest side `size`, the detector's aspect ratio. */
export function canvasSize(rows, cols, size) {
  if (!(rows > 0 && cols > 0)) return { width: size, height: size };
  if (cols >= rows) return { width: size, height: Math.max(1, Math.round((size * rows) / cols)) };
  return { width: Math.max(1, Math.round((size * cols) / rows)), height: size };
}

// DOM of the mask editor around its canvas: toolbar, status line and legend.

import { COLORMAP_NAMES } from "./colormaps.js";
import { describe } from "./geometry.js";
import { TOOL_KEYS } from "./keys.js";
import { calibratedPoint, formatNumber, isCalibrated } from "./scalebar.js";

const svg = (body) =>
  `<svg viewBox="0 0 16 16" width="16" height="16" fill="none" stroke="currentColor" ` +
  `stroke-width="1.3" stroke-linejoin="round" aria-hidden="true">${body}</svg>`;

const spotsIcon = [0, 60, 120, 180, 240, 300]
  .map((a) => {
    const t = (a * Math.PI) / 180;
    return `<circle cx="${(8 + 5 * Math.cos(t)).toFixed(2)}" cy="${(8 + 5 * Math.sin(t)).toFixed(2)}" r="1.6"/>`;
  })
  .join("");

const ICONS = {
  select: svg('<path d="M4 2.5v10.5l2.8-2.7 2 4.2 1.6-.8-2-4.1h3.9z"/>'),
  disk: svg('<circle cx="8" cy="8" r="5.5" fill="currentColor" fill-opacity="0.25"/>'),
  ring: svg('<circle cx="8" cy="8" r="6"/><circle cx="8" cy="8" r="3"/>'),
  rectangle: svg('<rect x="2.5" y="3.5" width="11" height="9"/>'),
  polygon: svg('<path d="M3 12.5 5 3l8.5 2.5-2 8z"/>'),
  point: svg('<path d="M8 2v4.5M8 9.5V14M2 8h4.5M9.5 8H14"/><circle cx="8" cy="8" r="0.8" fill="currentColor"/>'),
  spots: svg(`${spotsIcon}<path d="M7 8h2M8 7v2"/>`),
  add: svg('<path d="M8 3v10M3 8h10" stroke-width="1.8"/>'),
  subtract: svg('<path d="M3 8h10" stroke-width="1.8"/>'),
  delete: svg('<path d="M3 4.5h10M6.5 4.5V3h3v1.5M4.5 4.5l.7 9h5.6l.7-9"/>'),
  fit: svg('<path d="M2.5 6V2.5H6M10 2.5h3.5V6M13.5 10v3.5H10M6 13.5H2.5V10"/>'),
};

const TOOLS = [
  ["select", "Select, move and resize shapes; drag empty space to pan"],
  ["disk", "Disk: press at the centre, drag out to the radius"],
  ["ring", "Ring: press at the centre, drag out to the outer radius (inner = half)"],
  ["rectangle", "Rectangle: drag from corner to corner"],
  ["polygon", "Polygon: click the vertices; double-click, Enter or a click on the first vertex closes, Esc cancels"],
  ["point", "Point: click a pixel"],
  ["spots", "Symmetric spots: press at the centre, drag to the first spot; n from the box or keys 1-9"],
];

const OP_KEY = " (x toggles; with the select tool, x toggles the selected shape)";

function button(attrs, icon, title) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "se-me-button";
  for (const [k, v] of Object.entries(attrs)) b.setAttribute(k, v);
  b.innerHTML = icon;
  b.title = title;
  b.setAttribute("aria-label", title);
  return b;
}

function separator() {
  const s = document.createElement("span");
  s.className = "se-me-sep";
  return s;
}

/**
 * Build the toolbar. Returns {element, tools: {name: button}, ops: {add, subtract},
 * spotsN: input, deleteButton, fitButton, colormap: select, log: button}.
 */
export function buildToolbar() {
  const element = document.createElement("div");
  element.className = "se-me-toolbar";
  element.setAttribute("role", "toolbar");
  const tools = {};
  for (const [name, help] of TOOLS) {
    tools[name] = button({ "data-tool": name }, ICONS[name], `${help} (${TOOL_KEYS[name]})`);
    element.append(tools[name]);
  }
  element.append(separator());
  const ops = {
    add: button({ "data-op": "add" }, ICONS.add, `New shapes add to the mask${OP_KEY}`),
    subtract: button({ "data-op": "subtract" }, ICONS.subtract, `New shapes cut out of the mask${OP_KEY}`),
  };
  element.append(ops.add, ops.subtract);
  const spotsN = document.createElement("input");
  spotsN.type = "number";
  spotsN.min = "1";
  spotsN.max = "64";
  spotsN.step = "1";
  spotsN.className = "se-me-number";
  spotsN.dataset.role = "spots-n";
  spotsN.title = "n: number of symmetric spots (of the selected spots, else of new ones; keys 1-9)";
  element.append(spotsN);
  element.append(separator());
  const deleteButton = button({ "data-action": "delete" }, ICONS.delete, "Delete the selected shape (Delete)");
  const fitButton = button({ "data-action": "fit" }, ICONS.fit, "Reset the view: whole detector (f); wheel zooms, middle-drag or space+drag pans");
  element.append(deleteButton, fitButton);
  const spacer = document.createElement("span");
  spacer.className = "se-me-spacer";
  const colormap = document.createElement("select");
  colormap.className = "se-me-select";
  colormap.dataset.role = "colormap";
  colormap.title = "Colour map";
  for (const name of COLORMAP_NAMES) colormap.add(new Option(name, name));
  const log = button({ "data-action": "log" }, "log", "Logarithmic colour scale: log(1 + max(value, 0))");
  log.classList.add("se-me-text");
  element.append(spacer, colormap, log);
  return { element, tools, ops, spotsN, deleteButton, fitButton, colormap, log };
}

function formatValue(v) {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(3);
  return Number.isInteger(v) ? String(v) : v.toPrecision(5);
}

/**
 * Text of the cursor readout: pixel position (row, column), its calibrated coordinates
 * from the detector's centre when `calibration` (scalebar.js) has some, and the value
 * there with `calibration.valueUnit`.
 */
export function readoutText(p, rows, cols, values, calibration = null) {
  if (!p) return "";
  const y = Math.floor(p.y + 0.5);
  const x = Math.floor(p.x + 0.5);
  if (y < 0 || y >= rows || x < 0 || x >= cols) return `y ${p.y.toFixed(1)}  x ${p.x.toFixed(1)}`;
  const unit = calibration?.valueUnit ? ` ${calibration.valueUnit}` : "";
  const value = values && values.length === rows * cols ? `  = ${formatValue(values[y * cols + x])}${unit}` : "";
  let where = "";
  if (isCalibrated(calibration)) {
    const c = calibratedPoint({ y, x }, rows, cols, calibration);
    where = `  (${formatNumber(c.y)}, ${formatNumber(c.x)} ${calibration.unit})`;
  }
  return `y ${y}  x ${x}${where}${value}`;
}

/**
 * Fill the legend list with one row per shape: index, kind, op badge, parameters and a
 * delete button. Rows carry data-index; the op badge data-action="toggle-op", the
 * delete button data-action="remove".
 */
export function renderLegend(list, shapes, selected) {
  list.replaceChildren(
    ...shapes.map((shape, i) => {
      const row = document.createElement("li");
      row.dataset.index = String(i);
      row.className = "se-me-row" + (i === selected ? " se-me-selected" : "");
      const op = shape.op === "subtract" ? "subtract" : "add";
      row.innerHTML =
        `<span class="se-me-index">${i + 1}</span>` +
        `<span class="se-me-kind">${shape.kind === "symmetric_spots" ? "spots" : shape.kind}</span>` +
        `<button type="button" class="se-me-op se-me-op-${op}" data-action="toggle-op" ` +
        `title="Add to or cut out of the mask (click toggles)">${op === "add" ? "+" : "\u2212"}</button>` +
        `<span class="se-me-params"></span>` +
        `<button type="button" class="se-me-remove" data-action="remove" title="Delete this shape">\u00d7</button>`;
      row.querySelector(".se-me-params").textContent = describe(shape);
      return row;
    }),
  );
}

// The mask editor view: DOM, canvas, model binding and event dispatch.
//
// Local state mirrors the model's traits; the kernel has the last word on `shapes` (it
// drops shapes it rejects), so a change of `shapes` from the kernel replaces the local
// list, except while a gesture is under way: then the local list is the truth and the
// gesture's last state is sent when the pointer is released.
//
// Hooks for browser tests, on the root element (class se-mask-editor):
//   data-view         JSON {"scale", "offset_x", "offset_y"}: canvas CSS pixel of pixel
//                     coordinate (y, x) is (offset_x + scale * x, offset_y + scale * y),
//                     measured from the canvas's top-left corner; updated on each redraw
//   data-image-ready  "1" once a detector image has been drawn

import { lookupTable } from "./colormaps.js";
import { drawScene } from "./draw.js";
import { pickHandle, pickShape } from "./geometry.js";
import { colourise, toFloat32 } from "./image.js";
import { HANDLE_REACH, finishPolygon, nudgeSelected, startGesture } from "./interaction.js";
import { keyAction } from "./keys.js";
import { CSS } from "./styles.js";
import { createModelSync } from "./sync.js";
import { buildToolbar, readoutText, renderLegend } from "./toolbar.js";
import { canvasSize, fitView, toImage, zoomAt } from "./view.js";

const MAX_SPOTS = 64;

export class MaskEditorView {
  /** Build the editor inside `el` and bind it to the anywidget `model`. */
  constructor(model, el) {
    this.model = model;
    this.sync = createModelSync(model);
    this.disposers = [];
    this.state = {
      shapes: model.get("shapes") ?? [],
      selected: model.get("selected"),
      tool: model.get("tool"),
      op: model.get("op"),
      spotsN: model.get("spots_n"),
      view: null,
      rows: 0,
      cols: 0,
      polygonDraft: null,
    };
    this.draft = null;
    this.gesture = null;
    this.values = null;
    this.image = null;
    this.spaceDown = false;
    this.frame = null;
    this.legendDrawn = null;
    this.buildDom(el);
    this.bindModel();
    this.bindPointer();
    this.bindKeys();
    this.bindControls();
    this.layout();
    this.loadImage();
    this.refreshControls();
    this.showHint();
  }

  // --- DOM

  buildDom(el) {
    const root = document.createElement("div");
    root.className = "se-mask-editor";
    root.tabIndex = 0;
    const style = document.createElement("style");
    style.textContent = CSS;
    this.toolbar = buildToolbar();
    const stage = document.createElement("div");
    stage.className = "se-me-stage";
    this.canvas = document.createElement("canvas");
    this.canvas.className = "se-mask-editor-canvas";
    stage.append(this.canvas);
    const status = document.createElement("div");
    status.className = "se-me-status";
    this.readout = document.createElement("span");
    this.hint = document.createElement("span");
    this.hint.className = "se-me-hint";
    status.append(this.readout, this.hint);
    this.legend = document.createElement("ol");
    this.legend.className = "se-me-legend";
    root.append(style, this.toolbar.element, stage, status, this.legend);
    el.append(root);
    this.root = root;
  }

  on(target, type, handler, options) {
    target.addEventListener(type, handler, options);
    this.disposers.push(() => target.removeEventListener(type, handler, options));
  }

  listen(names, handler) {
    for (const name of names.split(" ")) {
      this.model.on(name, handler);
      this.disposers.push(() => this.model.off(name, handler));
    }
  }

  // --- model

  bindModel() {
    this.listen("change:shapes", () => {
      if (this.gesture) return;
      this.state.shapes = this.model.get("shapes") ?? [];
      if (this.state.selected >= this.state.shapes.length) this.state.selected = -1;
      this.refreshControls();
      this.requestRedraw();
    });
    this.listen("change:selected", () => {
      this.state.selected = this.model.get("selected");
      this.refreshControls();
      this.requestRedraw();
    });
    this.listen("change:tool", () => {
      this.state.tool = this.model.get("tool");
      if (this.state.tool !== "polygon") this.state.polygonDraft = null;
      this.refreshControls();
      this.requestRedraw();
    });
    this.listen("change:op", () => {
      this.state.op = this.model.get("op");
      this.refreshControls();
    });
    this.listen("change:spots_n", () => {
      this.state.spotsN = this.model.get("spots_n");
      this.refreshControls();
    });
    this.listen("change:image_shape change:size", () => {
      this.layout();
      this.loadImage();
    });
    this.listen("change:image", () => this.loadImage());
    this.listen("change:vmin change:vmax change:log change:colormap", () => {
      this.paintImage();
      this.refreshControls();
    });
    this.listen("change:hint", () => this.showHint());
    this.listen("change:pixel_size change:pixel_unit change:value_unit change:scale_style", () => this.requestRedraw());
  }

  /** The calibration of the detector axes and the value (scalebar.js). */
  calibration() {
    return {
      size: this.model.get("pixel_size") ?? [],
      unit: this.model.get("pixel_unit") ?? "",
      valueUnit: this.model.get("value_unit") ?? "",
      style: this.model.get("scale_style") ?? "axes",
    };
  }

  send(changes) {
    for (const [key, value] of Object.entries(changes)) this.model.set(key, value);
    this.model.save_changes();
  }

  // --- the interface used by interaction.js

  select(index) {
    this.state.selected = index;
    this.sync.schedule({ selected: index });
    this.refreshControls();
    this.requestRedraw();
  }

  updateShapes(shapes, final) {
    this.state.shapes = shapes;
    if (final) this.sync.flush({ shapes, dragging: false });
    else this.sync.schedule({ shapes, dragging: true });
    this.refreshControls();
    this.requestRedraw();
  }

  setDraft(shape) {
    this.draft = shape;
    this.requestRedraw();
  }

  setPolygonDraft(draft) {
    this.state.polygonDraft = draft;
    this.requestRedraw();
  }

  setView(view) {
    this.state.view = view;
    this.requestRedraw();
  }

  setHint(text) {
    this.send({ hint: text });
  }

  // --- layout and image

  layout() {
    const [rows, cols] = this.model.get("image_shape") ?? [];
    const { width, height } = canvasSize(rows, cols, this.model.get("size"));
    const dpr = window.devicePixelRatio || 1;
    this.width = width;
    this.height = height;
    this.dpr = dpr;
    this.canvas.style.width = `${width}px`;
    this.canvas.style.height = `${height}px`;
    this.canvas.width = Math.round(width * dpr);
    this.canvas.height = Math.round(height * dpr);
    this.root.style.width = `${width}px`;
    this.state.rows = rows > 0 ? rows : 0;
    this.state.cols = cols > 0 ? cols : 0;
    this.fit();
  }

  fit() {
    const { rows, cols } = this.state;
    this.state.view = rows && cols ? fitView(rows, cols, this.width, this.height) : null;
    this.requestRedraw();
  }

  loadImage() {
    const bytes = this.model.get("image");
    const { rows, cols } = this.state;
    const expected = rows * cols * 4;
    this.values = bytes && expected > 0 && bytes.byteLength === expected ? toFloat32(bytes) : null;
    this.paintImage();
  }

  paintImage() {
    const { rows, cols } = this.state;
    if (!this.values) {
      this.image = null;
      this.requestRedraw();
      return;
    }
    if (!this.image || this.image.width !== cols || this.image.height !== rows) {
      this.image = document.createElement("canvas");
      this.image.width = cols;
      this.image.height = rows;
    }
    const ctx = this.image.getContext("2d");
    const pixels = ctx.createImageData(cols, rows);
    colourise(
      this.values,
      {
        vmin: this.model.get("vmin"),
        vmax: this.model.get("vmax"),
        log: this.model.get("log"),
        lut: lookupTable(this.model.get("colormap")),
      },
      pixels.data,
    );
    ctx.putImageData(pixels, 0, 0);
    this.requestRedraw();
  }

  // --- drawing

  requestRedraw() {
    if (this.frame === null) {
      this.frame = window.requestAnimationFrame(() => {
        this.frame = null;
        this.redraw();
      });
    }
  }

  redraw() {
    const ctx = this.canvas.getContext("2d");
    ctx.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    const { view, rows, cols, shapes, selected, polygonDraft } = this.state;
    drawScene(ctx, {
      width: this.width,
      height: this.height,
      view,
      rows,
      cols,
      image: this.image,
      shapes,
      selected,
      draft: this.draft,
      polygonDraft,
      calibration: this.calibration(),
    });
    if (view) {
      this.root.dataset.view = JSON.stringify({ scale: view.scale, offset_x: view.offsetX, offset_y: view.offsetY });
    }
    if (this.image) this.root.dataset.imageReady = "1";
    if (this.legendDrawn?.shapes !== shapes || this.legendDrawn?.selected !== selected) {
      renderLegend(this.legend, shapes, selected);
      this.legendDrawn = { shapes, selected };
    }
  }

  showHint() {
    const text = this.model.get("hint") ?? "";
    this.hint.textContent = text;
    this.hint.title = text;
  }

  refreshControls() {
    const { tool, op, shapes, selected, spotsN } = this.state;
    for (const [name, b] of Object.entries(this.toolbar.tools)) b.setAttribute("aria-pressed", String(name === tool));
    for (const [name, b] of Object.entries(this.toolbar.ops)) b.setAttribute("aria-pressed", String(name === op));
    this.toolbar.log.setAttribute("aria-pressed", String(Boolean(this.model.get("log"))));
    this.toolbar.colormap.value = this.model.get("colormap");
    const chosen = shapes[selected];
    const n = chosen?.kind === "symmetric_spots" ? chosen.n : spotsN;
    if (document.activeElement !== this.toolbar.spotsN) this.toolbar.spotsN.value = String(n);
    this.toolbar.deleteButton.disabled = !chosen;
    this.canvas.style.cursor = tool === "select" ? "default" : "crosshair";
  }

  // --- actions

  setTool(tool) {
    this.state.polygonDraft = null;
    this.send({ tool });
  }

  setSpotsN(value) {
    const n = Math.min(Math.max(Math.round(Number(value)) || 1, 1), MAX_SPOTS);
    const { shapes, selected } = this.state;
    if (shapes[selected]?.kind === "symmetric_spots") {
      this.updateShapes(shapes.map((s, i) => (i === selected ? { ...s, n } : s)), true);
    } else {
      this.send({ spots_n: n });
    }
  }

  toggleOp(index) {
    const shapes = this.state.shapes;
    const flipped = (op) => (op === "subtract" ? "add" : "subtract");
    this.updateShapes(shapes.map((s, i) => (i === index ? { ...s, op: flipped(s.op) } : s)), true);
  }

  remove(index) {
    const shapes = this.state.shapes.filter((_, i) => i !== index);
    const selected = this.state.selected;
    this.state.selected = selected === index ? -1 : selected > index ? selected - 1 : selected;
    this.sync.schedule({ selected: this.state.selected });
    this.updateShapes(shapes, true);
  }

  apply(action) {
    const { tool, shapes, selected, polygonDraft } = this.state;
    switch (action.type) {
      case "tool":
        this.setTool(action.tool);
        break;
      case "toggleOp":
        if (tool === "select" && shapes[selected]) this.toggleOp(selected);
        else this.send({ op: this.state.op === "add" ? "subtract" : "add" });
        break;
      case "delete":
        if (polygonDraft) {
          const vertices = polygonDraft.vertices.slice(0, -1);
          this.setPolygonDraft(vertices.length ? { ...polygonDraft, vertices } : null);
        } else if (shapes[selected]) {
          this.remove(selected);
        }
        break;
      case "cancel":
        if (this.gesture) this.endGesture("cancel");
        else if (polygonDraft) this.setPolygonDraft(null);
        else if (selected >= 0) this.select(-1);
        break;
      case "finish":
        finishPolygon(this);
        break;
      case "fit":
        this.fit();
        break;
      case "nudge":
        nudgeSelected(this, action.dy, action.dx);
        break;
      case "spots":
        this.setSpotsN(action.n);
        break;
      default:
        break;
    }
  }

  // --- events

  pointerAt(event) {
    const rect = this.canvas.getBoundingClientRect();
    const cssX = event.clientX - rect.left;
    const cssY = event.clientY - rect.top;
    return { cssX, cssY, p: toImage(this.state.view, cssX, cssY) };
  }

  endGesture(how, pt) {
    const gesture = this.gesture;
    this.gesture = null;
    if (how === "end") gesture.end(pt);
    else gesture.cancel();
    if (this.sync.pending || this.model.get("dragging")) this.sync.flush({ dragging: false });
    this.refreshControls();
  }

  hoverCursor(pt) {
    const { shapes, selected, tool, view } = this.state;
    const reach = HANDLE_REACH / view.scale;
    if (shapes[selected] && tool !== "polygon" && pickHandle(shapes[selected], pt.p, reach)) return "move";
    if (tool !== "select") return "crosshair";
    return pickShape(shapes, pt.p, reach) >= 0 ? "grab" : "default";
  }

  bindPointer() {
    const canvas = this.canvas;
    this.on(canvas, "pointerdown", (event) => {
      if (this.gesture || !this.state.view || event.button === 2) return;
      event.preventDefault();
      this.root.focus({ preventScroll: true });
      const pt = this.pointerAt(event);
      const gesture = startGesture(this, pt, { pan: event.button === 1 || this.spaceDown });
      if (!gesture) return;
      canvas.setPointerCapture(event.pointerId);
      this.gesture = gesture;
      this.gesturePointer = event.pointerId;
      canvas.style.cursor = gesture.cursor;
    });
    this.on(canvas, "pointermove", (event) => {
      if (!this.state.view) return;
      const pt = this.pointerAt(event);
      this.readout.textContent = readoutText(pt.p, this.state.rows, this.state.cols, this.values, this.calibration());
      if (this.gesture) {
        if (event.pointerId === this.gesturePointer) this.gesture.move(pt);
        return;
      }
      if (this.state.polygonDraft) this.setPolygonDraft({ ...this.state.polygonDraft, cursor: pt.p });
      canvas.style.cursor = this.spaceDown ? "grab" : this.hoverCursor(pt);
    });
    const release = (how) => (event) => {
      if (!this.gesture || event.pointerId !== this.gesturePointer) return;
      this.endGesture(how, this.pointerAt(event));
      if (canvas.hasPointerCapture(event.pointerId)) canvas.releasePointerCapture(event.pointerId);
    };
    this.on(canvas, "pointerup", release("end"));
    this.on(canvas, "pointercancel", release("cancel"));
    this.on(canvas, "pointerleave", () => {
      if (!this.gesture) this.readout.textContent = "";
    });
    this.on(canvas, "dblclick", (event) => {
      if (this.state.tool !== "polygon") return;
      event.preventDefault();
      finishPolygon(this);
    });
    this.on(canvas, "contextmenu", (event) => event.preventDefault());
    this.on(
      canvas,
      "wheel",
      (event) => {
        if (!this.state.view) return;
        event.preventDefault();
        const perUnit = event.deltaMode === 1 ? 0.05 : event.deltaMode === 2 ? 1 : 0.002;
        const pt = this.pointerAt(event);
        this.setView(zoomAt(this.state.view, Math.exp(-event.deltaY * perUnit), pt.cssX, pt.cssY));
      },
      { passive: false },
    );
  }

  bindKeys() {
    const isField = (target) => target instanceof HTMLInputElement || target instanceof HTMLSelectElement;
    this.on(this.root, "keydown", (event) => {
      if (isField(event.target)) return;
      if (event.key === " ") {
        this.spaceDown = true;
        this.canvas.style.cursor = "grab";
      } else {
        const action = keyAction(event);
        if (action) this.apply(action);
        // Keys the editor does not use still stay here, so that a notebook in command
        // mode does not act on them (e.g. "a" inserting a cell); combinations with
        // Ctrl/Cmd/Alt and Shift+Enter (run cell) go on to the page.
        else if (event.ctrlKey || event.metaKey || event.altKey || event.key.length !== 1) return;
      }
      event.preventDefault();
      event.stopPropagation();
    });
    this.on(this.root, "keyup", (event) => {
      if (event.key === " ") {
        this.spaceDown = false;
        this.refreshControls();
      }
    });
  }

  bindControls() {
    const t = this.toolbar;
    for (const [name, b] of Object.entries(t.tools)) this.on(b, "click", () => this.setTool(name));
    for (const [name, b] of Object.entries(t.ops)) this.on(b, "click", () => this.send({ op: name }));
    this.on(t.spotsN, "change", () => this.setSpotsN(t.spotsN.value));
    this.on(t.deleteButton, "click", () => this.apply({ type: "delete" }));
    this.on(t.fitButton, "click", () => this.fit());
    this.on(t.colormap, "change", () => this.send({ colormap: t.colormap.value }));
    this.on(t.log, "click", () => this.send({ log: !this.model.get("log") }));
    this.on(this.legend, "click", (event) => {
      const row = event.target.closest("li[data-index]");
      if (!row) return;
      const index = Number(row.dataset.index);
      const action = event.target.closest("[data-action]")?.dataset.action;
      if (action === "toggle-op") this.toggleOp(index);
      else if (action === "remove") this.remove(index);
      else this.select(index === this.state.selected ? -1 : index);
      this.sync.flush();
      this.root.focus({ preventScroll: true });
    });
  }

  /** Remove listeners and pending work (the anywidget view is going away). */
  dispose() {
    if (this.frame !== null) window.cancelAnimationFrame(this.frame);
    this.sync.dispose();
    for (const dispose of this.disposers.splice(0)) dispose();
    this.root.remove();
  }
}

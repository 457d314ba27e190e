import assert from "node:assert/strict";
import { test } from "node:test";
import { finishPolygon, nudgeSelected, startGesture } from "../../js/src/interaction.js";
import { fitView, toCss } from "../../js/src/view.js";

/** An editor without DOM: records what the gestures ask for. */
function fakeEditor(state = {}) {
  const editor = {
    state: {
      shapes: [],
      selected: -1,
      tool: "select",
      op: "add",
      spotsN: 6,
      view: fitView(64, 64, 256, 256), // 4 CSS pixels per detector pixel
      rows: 64,
      cols: 64,
      polygonDraft: null,
      ...state,
    },
    sent: [],
    selectedWhenSent: [], // the selection each shape list went out with
    hints: [],
    draft: null,
    select(i) {
      this.state.selected = i;
    },
    updateShapes(shapes, final) {
      this.state.shapes = shapes;
      this.sent.push({ shapes, final });
      this.selectedWhenSent.push(this.state.selected);
    },
    setDraft(shape) {
      this.draft = shape;
    },
    setPolygonDraft(draft) {
      this.state.polygonDraft = draft;
    },
    setView(view) {
      this.state.view = view;
    },
    setHint(text) {
      this.hints.push(text);
    },
  };
  return editor;
}

/** A pointer position over detector point (y, x). */
function at(editor, y, x) {
  const c = toCss(editor.state.view, y, x);
  return { cssX: c.x, cssY: c.y, p: { y, x } };
}

function drag(editor, from, to, steps = 4) {
  const start = at(editor, ...from);
  const gesture = startGesture(editor, start);
  for (let i = 1; i <= steps; i++) {
    const t = i / steps;
    gesture?.move(at(editor, from[0] + (to[0] - from[0]) * t, from[1] + (to[1] - from[1]) * t));
  }
  gesture?.end(at(editor, ...to));
  return gesture;
}

test("drawing a disk: a draft while dragging, one final shape, selected", () => {
  const editor = fakeEditor({ tool: "disk", op: "subtract" });
  const start = at(editor, 32, 32);
  const gesture = startGesture(editor, start);
  gesture.move(at(editor, 32, 40));
  assert.deepEqual(editor.draft, { kind: "disk", cy: 32, cx: 32, radius: 8, op: "subtract" });
  assert.equal(editor.sent.length, 0);
  gesture.end(at(editor, 32, 42));
  assert.equal(editor.draft, null);
  assert.deepEqual(editor.sent, [{ shapes: [{ kind: "disk", cy: 32, cx: 32, radius: 10, op: "subtract" }], final: true }]);
  assert.equal(editor.state.selected, 0);
  // selected before the shapes go out, so both travel in one message to the kernel
  assert.deepEqual(editor.selectedWhenSent, [0]);
});

test("a click with a drawing tool draws nothing and says how to draw", () => {
  const editor = fakeEditor({ tool: "ring" });
  drag(editor, [10, 10], [10, 10.2]);
  assert.equal(editor.state.shapes.length, 0);
  assert.match(editor.hints[0], /drag/);
});

test("moving a shape sends frames while dragging, then the final position", () => {
  const disk = { kind: "disk", cy: 20, cx: 20, radius: 5, op: "add" };
  const editor = fakeEditor({ shapes: [disk] });
  drag(editor, [20, 20], [30, 25]);
  assert.equal(editor.state.selected, 0);
  assert.ok(editor.sent.slice(0, -1).every((s) => !s.final));
  assert.deepEqual(editor.sent.at(-1), { shapes: [{ ...disk, cy: 30, cx: 25 }], final: true });
});

test("a shape dragged off the detector goes back, with a hint", () => {
  const disk = { kind: "disk", cy: 20, cx: 20, radius: 5, op: "add" };
  const editor = fakeEditor({ shapes: [disk] });
  drag(editor, [20, 20], [200, 20]);
  assert.deepEqual(editor.state.shapes, [disk]);
  assert.match(editor.hints[0], /outside/);
});

test("the selected shape's handles resize it with any tool", () => {
  const disk = { kind: "disk", cy: 20, cx: 20, radius: 5, op: "add" };
  const editor = fakeEditor({ shapes: [disk], selected: 0, tool: "ring" });
  drag(editor, [20, 25], [20, 29]);
  assert.deepEqual(editor.state.shapes, [{ ...disk, radius: 9 }]);
});

test("select tool on empty space pans; a click there deselects", () => {
  const editor = fakeEditor({ shapes: [{ kind: "disk", cy: 5, cx: 5, radius: 2, op: "add" }], selected: 0 });
  const before = editor.state.view;
  const gesture = startGesture(editor, at(editor, 40, 40));
  const target = at(editor, 40, 50); // 40 CSS pixels to the right
  gesture.move(target);
  gesture.end(target);
  assert.equal(editor.state.view.offsetX, before.offsetX + 40);
  assert.equal(editor.state.view.offsetY, before.offsetY);
  assert.equal(editor.state.selected, 0);
  drag(editor, [40, 40], [40, 40]);
  assert.equal(editor.state.selected, -1);
});

test("polygons: clicks add vertices, a click on the first closes", () => {
  const editor = fakeEditor({ tool: "polygon" });
  for (const [y, x] of [[10, 10], [10, 30], [30, 20]]) assert.equal(startGesture(editor, at(editor, y, x)), null);
  assert.equal(editor.state.polygonDraft.vertices.length, 3);
  startGesture(editor, at(editor, 10.5, 10.5));
  assert.equal(editor.state.polygonDraft, null);
  assert.deepEqual(editor.state.shapes, [{ kind: "polygon", vertices: [[10, 10], [10, 30], [30, 20]], op: "add" }]);
});

test("polygons: finishing with fewer than 3 distinct points is refused", () => {
  const editor = fakeEditor({ tool: "polygon" });
  startGesture(editor, at(editor, 10, 10));
  startGesture(editor, at(editor, 10, 30));
  startGesture(editor, at(editor, 10, 30)); // the second click of a double-click
  finishPolygon(editor);
  assert.equal(editor.state.shapes.length, 0);
  assert.equal(editor.hints[0], "a polygon needs at least 3 points; ignored");
});

test("points and symmetric spots", () => {
  const editor = fakeEditor({ tool: "point" });
  drag(editor, [3.2, 4.7], [3.2, 4.7]);
  assert.deepEqual(editor.state.shapes, [{ kind: "point", y: 3.2, x: 4.7, op: "add" }]);
  const spots = fakeEditor({ tool: "spots", spotsN: 4 });
  drag(spots, [32, 32], [32, 42]);
  const s = spots.state.shapes[0];
  assert.equal(s.kind, "symmetric_spots");
  assert.equal(s.n, 4);
  assert.equal(s.distance, 10);
});

test("arrow-key nudges move the selection, but not off the detector", () => {
  const point = { kind: "point", y: 1, x: 1, op: "add" };
  const editor = fakeEditor({ shapes: [point], selected: 0 });
  nudgeSelected(editor, 0, 1);
  assert.deepEqual(editor.state.shapes, [{ ...point, x: 2 }]);
  nudgeSelected(editor, -10, 0);
  assert.deepEqual(editor.state.shapes, [{ ...point, x: 2 }]);
  assert.match(editor.hints[0], /outside/);
});

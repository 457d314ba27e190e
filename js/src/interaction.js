// Pointer gestures of the mask editor: pan, move, resize by handle, draw, polygons.
//
// A gesture starts on pointerdown and receives every later pointer position until the
// pointer is released. Positions are {cssX, cssY, p}, p being the pixel coordinates
// {y, x} under the pointer. The editor passed in provides:
//   state       {shapes, selected, tool, op, spotsN, view, rows, cols, polygonDraft}
//   select(i)                 select shape i (-1: none)
//   updateShapes(shapes, final)  replace the shape list (final: the gesture ended)
//   setDraft(shape | null)    a shape being drawn, shown but not yet in the list
//   setPolygonDraft(d | null) the polygon being drawn: {vertices, cursor, op}
//   setView(view)             change the view transform
//   setHint(text)             show a message to the user
import {
  distinctVertices,
  dragHandle,
  pickHandle,
  pickShape,
  shapeFromDrag,
  shapeProblem,
  tidy,
  translate,
} from "./geometry.js";
import { panBy } from "./view.js";

/** A press that moves less than this many CSS pixels is a click. */
export const CLICK_SLOP = 3;
/** Reach of handles and hit tests, in CSS pixels. */
export const HANDLE_REACH = 7;

const DRAG_TOOLS = { disk: "disk", ring: "ring", rectangle: "rectangle", spots: "spots" };

function moved(a, b) {
  return Math.hypot(b.cssX - a.cssX, b.cssY - a.cssY) >= CLICK_SLOP;
}

function replaceAt(shapes, index, shape) {
  return shapes.map((s, i) => (i === index ? shape : s));
}

/** Whether a new or edited shape passes the editor's checks; if not, says why. */
function acceptable(editor, shape) {
  const problem = shapeProblem(shape, editor.state.rows, editor.state.cols);
  if (problem) editor.setHint(`${problem}; ignored`);
  return !problem;
}

function addShape(editor, shape) {
  if (!acceptable(editor, shape)) return;
  const shapes = [...editor.state.shapes, shape];
  // selecting first puts the selection into the same message as the shapes: the
  // widget protocol holds a model's next message until the kernel has handled the
  // last, so a separate one would reach the kernel while the new job runs
  editor.select(shapes.length - 1);
  editor.updateShapes(shapes, true);
}

function panGesture(editor, start, onClick) {
  const view = editor.state.view;
  let wasMoved = false;
  return {
    cursor: "grabbing",
    move(pt) {
      wasMoved = wasMoved || moved(start, pt);
      editor.setView(panBy(view, pt.cssX - start.cssX, pt.cssY - start.cssY));
    },
    end() {
      if (!wasMoved && onClick) onClick();
    },
    cancel() {
      editor.setView(view);
    },
  };
}

function editGesture(editor, start, index, reshape) {
  const original = editor.state.shapes[index];
  let wasMoved = false;
  return {
    cursor: "grabbing",
    move(pt) {
      wasMoved = wasMoved || moved(start, pt);
      if (wasMoved) editor.updateShapes(replaceAt(editor.state.shapes, index, reshape(original, pt.p)), false);
    },
    end(pt) {
      if (!wasMoved) return;
      const shape = reshape(original, pt.p);
      // A shape dragged off the detector goes back to where it was.
      editor.updateShapes(replaceAt(editor.state.shapes, index, acceptable(editor, shape) ? shape : original), true);
    },
    cancel() {
      if (wasMoved) editor.updateShapes(replaceAt(editor.state.shapes, index, original), true);
    },
  };
}

function drawGesture(editor, start, tool) {
  const { op, spotsN, view } = editor.state;
  const minDrag = CLICK_SLOP / view.scale;
  const make = (pt) => {
    const shape = shapeFromDrag(tool, start.p, pt.p, { minDrag, spotsN });
    return shape && { ...shape, op };
  };
  return {
    cursor: "crosshair",
    move(pt) {
      editor.setDraft(make(pt));
    },
    end(pt) {
      editor.setDraft(null);
      const shape = make(pt);
      if (shape) addShape(editor, shape);
      else editor.setHint(`drag to draw a ${tool === "spots" ? "set of spots" : tool}: ${DRAG_HELP[tool]}`);
    },
    cancel() {
      editor.setDraft(null);
    },
  };
}

const DRAG_HELP = {
  disk: "press at the centre and drag out to the radius",
  ring: "press at the centre and drag out to the outer radius",
  rectangle: "press at one corner and drag to the opposite one",
  spots: "press at the centre and drag to the first spot",
};

function pointGesture(editor) {
  const { op } = editor.state;
  return {
    cursor: "crosshair",
    move(pt) {
      editor.setDraft({ kind: "point", y: pt.p.y, x: pt.p.x, op });
    },
    end(pt) {
      editor.setDraft(null);
      addShape(editor, { kind: "point", y: tidy(pt.p.y), x: tidy(pt.p.x), op });
    },
    cancel() {
      editor.setDraft(null);
    },
  };
}

/** Add a vertex to the polygon being drawn, or close it when the first vertex is clicked. */
function polygonClick(editor, pt) {
  const draft = editor.state.polygonDraft;
  const reach = HANDLE_REACH / editor.state.view.scale;
  if (draft && draft.vertices.length >= 3) {
    const [y, x] = draft.vertices[0];
    if (Math.hypot(pt.p.y - y, pt.p.x - x) <= reach) {
      finishPolygon(editor);
      return;
    }
  }
  const vertices = [...(draft ? draft.vertices : []), [tidy(pt.p.y), tidy(pt.p.x)]];
  editor.setPolygonDraft({ vertices, cursor: pt.p, op: draft ? draft.op : editor.state.op });
}

/** Close the polygon being drawn (Enter, double-click, click on its first vertex). */
export function finishPolygon(editor) {
  const draft = editor.state.polygonDraft;
  if (!draft) return;
  editor.setPolygonDraft(null);
  const vertices = distinctVertices(draft.vertices);
  if (vertices.length < 3) {
    editor.setHint("a polygon needs at least 3 points; ignored");
    return;
  }
  addShape(editor, { kind: "polygon", vertices, op: draft.op });
}

/**
 * The gesture that a press at `pt` starts. `pan` asks for panning whatever the tool
 * (middle button, or space held down). Returns null when the press does its work at
 * once (a polygon vertex).
 */
export function startGesture(editor, pt, { pan = false } = {}) {
  const { shapes, selected, tool, view } = editor.state;
  if (pan) return panGesture(editor, pt);
  const reach = HANDLE_REACH / view.scale;
  if (tool === "polygon") {
    polygonClick(editor, pt);
    return null;
  }
  const chosen = shapes[selected];
  const handle = chosen ? pickHandle(chosen, pt.p, reach) : null;
  if (handle) return editGesture(editor, pt, selected, (shape, p) => dragHandle(shape, handle, p));
  if (tool === "select") {
    const index = pickShape(shapes, pt.p, reach);
    if (index < 0) return panGesture(editor, pt, () => editor.select(-1));
    editor.select(index);
    return editGesture(editor, pt, index, (shape, p) => translate(shape, p.y - pt.p.y, p.x - pt.p.x));
  }
  if (tool === "point") return pointGesture(editor);
  if (tool in DRAG_TOOLS) return drawGesture(editor, pt, DRAG_TOOLS[tool]);
  return null;
}

/** Move the selected shape by (dy, dx) pixels (arrow keys). */
export function nudgeSelected(editor, dy, dx) {
  const { shapes, selected } = editor.state;
  if (!shapes[selected]) return;
  const shape = translate(shapes[selected], dy, dx);
  if (acceptable(editor, shape)) editor.updateShapes(replaceAt(shapes, selected, shape), true);
}

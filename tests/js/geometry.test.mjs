import assert from "node:assert/strict";
import { test } from "node:test";
import {
  bounds,
  describe,
  distinctVertices,
  dragHandle,
  handles,
  hitsShape,
  pickHandle,
  pickShape,
  shapeFromDrag,
  shapeProblem,
  spotCentres,
  translate,
} from "../../js/src/geometry.js";

const close = (a, b, eps = 1e-9) => assert.ok(Math.abs(a - b) <= eps, `${a} != ${b}`);

test("drags make disks, rings, rectangles and spots; short drags make nothing", () => {
  const a = { y: 10, x: 20 };
  const b = { y: 13, x: 24 };
  assert.deepEqual(shapeFromDrag("disk", a, b), { kind: "disk", cy: 10, cx: 20, radius: 5 });
  assert.deepEqual(shapeFromDrag("ring", a, b), { kind: "ring", cy: 10, cx: 20, r_inner: 2.5, r_outer: 5 });
  assert.deepEqual(shapeFromDrag("rectangle", b, a), { kind: "rectangle", y0: 10, x0: 20, height: 3, width: 4 });
  const spots = shapeFromDrag("spots", a, { y: 10, x: 30 }, { spotsN: 4 });
  assert.equal(spots.kind, "symmetric_spots");
  assert.equal(spots.n, 4);
  assert.equal(spots.distance, 10);
  assert.equal(spots.angle, 0);
  assert.equal(shapeFromDrag("disk", a, { y: 10.2, x: 20 }, { minDrag: 1 }), null);
  assert.equal(shapeFromDrag("rectangle", a, { y: 30, x: 20.5 }, { minDrag: 1 }), null);
});

test("spot centres go from +x towards +y (down the rows)", () => {
  const c = spotCentres({ kind: "symmetric_spots", cy: 0, cx: 0, distance: 10, radius: 1, n: 4, angle: 0 });
  close(c[0].x, 10);
  close(c[0].y, 0);
  close(c[1].y, 10);
  close(c[1].x, 0);
});

test("bounds and translate", () => {
  const r = { kind: "ring", cy: 5, cx: 6, r_inner: 1, r_outer: 2, op: "add" };
  assert.deepEqual(bounds(r), { ymin: 3, ymax: 7, xmin: 4, xmax: 8 });
  assert.deepEqual(translate(r, 1, -1), { ...r, cy: 6, cx: 5 });
  const p = { kind: "polygon", vertices: [[0, 0], [0, 4], [3, 0]], op: "subtract" };
  assert.deepEqual(translate(p, 1, 2).vertices, [[1, 2], [1, 6], [4, 2]]);
  assert.equal(translate(p, 1, 2).op, "subtract");
  assert.deepEqual(translate({ kind: "point", y: 1, x: 2 }, 0.5, 0.5), { kind: "point", y: 1.5, x: 2.5 });
});

test("handles resize: disk radius, ring radii stay ordered, rectangle corners", () => {
  const disk = { kind: "disk", cy: 10, cx: 10, radius: 3 };
  assert.equal(dragHandle(disk, "radius", { y: 10, x: 18 }).radius, 8);
  assert.equal(dragHandle(disk, "radius", { y: 10, x: 10 }).radius, 0.5);
  const ring = { kind: "ring", cy: 0, cx: 0, r_inner: 2, r_outer: 4 };
  assert.equal(dragHandle(ring, "outer", { y: 0, x: 9 }).r_outer, 9);
  assert.equal(dragHandle(ring, "outer", { y: 0, x: 1 }).r_outer, 2.5);
  assert.equal(dragHandle(ring, "inner", { y: 3, x: 0 }).r_inner, 3);
  assert.equal(dragHandle(ring, "inner", { y: 9, x: 0 }).r_inner, 3.5);
  const rect = { kind: "rectangle", y0: 0, x0: 0, height: 4, width: 6 };
  assert.deepEqual(dragHandle(rect, "se", { y: 8, x: 9 }), { kind: "rectangle", y0: 0, x0: 0, height: 8, width: 9 });
  // Dragging a corner past the opposite one flips the rectangle instead of inverting it.
  assert.deepEqual(dragHandle(rect, "nw", { y: 6, x: 8 }), { kind: "rectangle", y0: 4, x0: 6, height: 2, width: 2 });
  const poly = { kind: "polygon", vertices: [[0, 0], [0, 4], [3, 0]] };
  assert.deepEqual(dragHandle(poly, "v1", { y: 1, x: 5 }).vertices, [[0, 0], [1, 5], [3, 0]]);
  const spots = { kind: "symmetric_spots", cy: 0, cx: 0, distance: 5, radius: 1, n: 6, angle: 0 };
  const moved = dragHandle(spots, "distance", { y: 7, x: 0 });
  close(moved.distance, 7);
  close(moved.angle, 90);
  assert.equal(dragHandle(spots, "radius", { y: 2, x: 5 }).radius, 2);
});

test("every handle is where dragging it leaves the shape unchanged", () => {
  const shapes = [
    { kind: "disk", cy: 3, cx: 4, radius: 2 },
    { kind: "ring", cy: 3, cx: 4, r_inner: 1, r_outer: 2 },
    { kind: "rectangle", y0: 1, x0: 2, height: 3, width: 4 },
    { kind: "polygon", vertices: [[0, 0], [0, 4], [3, 0]] },
    { kind: "symmetric_spots", cy: 10, cx: 10, distance: 5, radius: 1.5, n: 3, angle: 30 },
  ];
  for (const shape of shapes) {
    for (const h of handles(shape)) {
      const after = dragHandle(shape, h.name, { y: h.y, x: h.x });
      for (const key of Object.keys(shape)) {
        if (typeof shape[key] === "number") close(after[key], shape[key], 1e-3);
      }
    }
  }
});

test("hit tests: ring band only, polygon inside and edges, topmost wins", () => {
  const ring = { kind: "ring", cy: 0, cx: 0, r_inner: 5, r_outer: 10 };
  assert.ok(hitsShape(ring, { y: 0, x: 7 }));
  assert.ok(!hitsShape(ring, { y: 0, x: 2 }));
  assert.ok(hitsShape(ring, { y: 0, x: 11 }, 1.5));
  const poly = { kind: "polygon", vertices: [[0, 0], [0, 10], [10, 0]] };
  assert.ok(hitsShape(poly, { y: 2, x: 2 }));
  assert.ok(!hitsShape(poly, { y: 8, x: 8 }));
  assert.ok(hitsShape(poly, { y: 5.5, x: 5.5 }, 1));
  const disk = { kind: "disk", cy: 0, cx: 0, radius: 3 };
  assert.equal(pickShape([ring, disk], { y: 0, x: 1 }), 1);
  assert.equal(pickShape([disk, { ...disk }], { y: 0, x: 1 }), 1);
  assert.equal(pickShape([ring, disk], { y: 50, x: 50 }), -1);
  const spots = { kind: "symmetric_spots", cy: 0, cx: 0, distance: 10, radius: 2, n: 4, angle: 0 };
  assert.ok(hitsShape(spots, { y: 10, x: 1 }));
  assert.ok(!hitsShape(spots, { y: 5, x: 5 }));
  assert.equal(pickHandle(disk, { y: 0.4, x: 3.2 }, 1), "radius");
  assert.equal(pickHandle(disk, { y: 0, x: 6 }, 1), null);
});

test("polygon vertices: duplicates from a double-click and a closing click go", () => {
  const v = [[0, 0], [0, 5], [0, 5], [4, 4], [0, 0]];
  assert.deepEqual(distinctVertices(v), [[0, 0], [0, 5], [4, 4]]);
});

test("shapeProblem refuses what the kernel refuses", () => {
  const rows = 32;
  const cols = 48;
  assert.equal(shapeProblem({ kind: "disk", cy: 5, cx: 5, radius: 3 }, rows, cols), null);
  assert.match(shapeProblem({ kind: "disk", cy: 5, cx: 5, radius: NaN }, rows, cols), /finite/);
  assert.match(shapeProblem({ kind: "disk", cy: 5, cx: 5, radius: -1 }, rows, cols), /positive radius/);
  assert.match(shapeProblem({ kind: "ring", cy: 5, cx: 5, r_inner: 4, r_outer: 4 }, rows, cols), /r_inner/);
  assert.match(shapeProblem({ kind: "polygon", vertices: [[0, 0], [1, 1], [1, 1]] }, rows, cols), /3 distinct/);
  assert.match(shapeProblem({ kind: "polygon", vertices: [[0, 0], [1, 1], [2, 2]] }, rows, cols), /collinear/);
  assert.match(shapeProblem({ kind: "disk", cy: -20, cx: 5, radius: 3 }, rows, cols), /outside the 32 x 48/);
  assert.match(shapeProblem({ kind: "point", y: 31.6, x: 3 }, rows, cols), /outside/);
  assert.equal(shapeProblem({ kind: "point", y: 31.4, x: 3 }, rows, cols), null);
  // Partly outside is fine: rasterising clips.
  assert.equal(shapeProblem({ kind: "rectangle", y0: -10, x0: -10, height: 12, width: 12 }, rows, cols), null);
  assert.match(shapeProblem({ kind: "weighted" }, rows, cols), /cannot be edited/);
  // Without a detector only the shape itself is checked.
  assert.equal(shapeProblem({ kind: "disk", cy: -200, cx: 5, radius: 3 }, 0, 0), null);
});

test("legend descriptions name the key parameters", () => {
  assert.equal(describe({ kind: "disk", cy: 1, cx: 2, radius: 3 }), "c (1.0, 2.0)  r 3.0");
  assert.match(describe({ kind: "point", y: 2.6, x: 3.4 }), /px \(3, 3\)/);
  assert.match(describe({ kind: "symmetric_spots", cy: 1, cx: 2, distance: 3, radius: 1, n: 6, angle: 0 }), /n 6/);
});

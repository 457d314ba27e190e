import assert from "node:assert/strict";
import { test } from "node:test";
import { canvasSize, fitView, panBy, toCss, toImage, zoomAt } from "../../js/src/view.js";

const near = (a, b) => assert.ok(Math.abs(a - b) < 1e-9, `${a} != ${b}`);

test("the fitted view shows every pixel whole and centred", () => {
  const v = fitView(100, 200, 400, 400);
  assert.equal(v.scale, 2);
  // Pixel (0, 0) covers [-0.5, 0.5): its left edge is at the canvas edge.
  near(toCss(v, 0, -0.5).x, 0);
  near(toCss(v, 99.5, 199.5).x, 400);
  near(toCss(v, -0.5, 0).y, 100);
  near(toCss(v, 99.5, 0).y, 300);
});

test("toImage inverts toCss; zoom keeps the point under the cursor", () => {
  const v = zoomAt(fitView(64, 64, 256, 256), 3, 70, 90);
  const p = toImage(v, 70, 90);
  const before = toImage(fitView(64, 64, 256, 256), 70, 90);
  near(p.x, before.x);
  near(p.y, before.y);
  const c = toCss(v, p.y, p.x);
  near(c.x, 70);
  near(c.y, 90);
  const panned = panBy(v, 10, -5);
  near(toCss(panned, p.y, p.x).x, 80);
});

test("zoom is limited", () => {
  let v = fitView(64, 64, 256, 256);
  for (let i = 0; i < 100; i++) v = zoomAt(v, 2, 0, 0);
  assert.equal(v.scale, v.fitScale * 256);
  for (let i = 0; i < 100; i++) v = zoomAt(v, 0.5, 0, 0);
  assert.equal(v.scale, v.fitScale * 0.25);
});

test("the canvas keeps the detector's aspect ratio within size", () => {
  assert.deepEqual(canvasSize(256, 256, 420), { width: 420, height: 420 });
  assert.deepEqual(canvasSize(128, 256, 420), { width: 420, height: 210 });
  assert.deepEqual(canvasSize(256, 128, 420), { width: 210, height: 420 });
  assert.deepEqual(canvasSize(0, 0, 420), { width: 420, height: 420 });
});

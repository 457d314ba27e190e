import assert from "node:assert/strict";
import { test } from "node:test";
import { calibratedPoint, drawCalibration, niceLength, scaleBar } from "../../js/src/scalebar.js";
import { readoutText } from "../../js/src/toolbar.js";
import { fitView, zoomAt } from "../../js/src/view.js";

const near = (a, b) => assert.ok(Math.abs(a - b) < 1e-9, `${a} != ${b}`);

test("nice lengths are 1, 2 or 5 times a power of ten, the longest that fits", () => {
  assert.deepEqual([0.7, 1, 1.99, 2, 4.9, 5, 9.99, 10, 0.034].map(niceLength), [0.5, 1, 1, 2, 2, 5, 5, 10, 0.02]);
  assert.ok(Number.isNaN(niceLength(0)) && Number.isNaN(niceLength(-1)) && Number.isNaN(niceLength(Infinity)));
});

test("the scale bar is as long on the canvas as its calibrated length, and follows the zoom", () => {
  const calibration = { size: [0.5, 0.25], unit: "mrad", style: "scale bar" };
  const view = fitView(40, 40, 400, 400); // 10 CSS px per pixel: 0.025 mrad per CSS px in x
  const bar = scaleBar(view, 400, calibration);
  assert.equal(bar.text, "2 mrad"); // 0.3 * 400 px = 3 mrad at most
  near(bar.cssLength, 80);
  const zoomed = scaleBar(zoomAt(view, 4, 200, 200), 400, calibration);
  assert.equal(zoomed.text, "0.5 mrad");
  near(zoomed.cssLength, 80);
});

test("the readout shows the calibrated coordinate from the detector's centre and the value's unit", () => {
  const values = Float32Array.from({ length: 12 }, (_, i) => i);
  const calibration = { size: [0.5, 2], unit: "1/nm", valueUnit: "counts" };
  assert.equal(readoutText({ y: 0, x: 3 }, 3, 4, values, calibration), "y 0  x 3  (-0.5, 3 1/nm)  = 3 counts");
  assert.equal(readoutText({ y: 1, x: 0 }, 3, 4, values), "y 1  x 0  = 4");
  const c = calibratedPoint({ y: 1, x: 1.5 }, 3, 4, calibration);
  near(c.y, 0);
  near(c.x, 0);
});

test("an uncalibrated detector draws nothing; a calibrated one draws its bar or rulers", () => {
  const calls = [];
  const ctx = new Proxy({}, {
    get: (target, name) => (name in target ? target[name] : (...args) => calls.push([name, ...args])),
    set: (target, name, value) => { target[name] = value; return true; },
  });
  const scene = { view: fitView(40, 40, 400, 400), rows: 40, cols: 40, width: 400, height: 400 };
  drawCalibration(ctx, { ...scene, calibration: { size: [], unit: "", style: "axes" } });
  assert.equal(calls.length, 0);
  drawCalibration(ctx, { ...scene, calibration: { size: [1, 1], unit: "mrad", style: "scale bar" } });
  assert.ok(calls.some(([name, text]) => name === "fillText" && text === "10 mrad"), JSON.stringify(calls));
  calls.length = 0;
  drawCalibration(ctx, { ...scene, calibration: { size: [1, 1], unit: "mrad", style: "axes" } });
  const labels = calls.filter(([name]) => name === "fillText").map(([, text]) => text);
  assert.ok(labels.includes("0") && labels.includes("-10") && labels.includes("10") && labels.includes("mrad"), labels.join(","));
});

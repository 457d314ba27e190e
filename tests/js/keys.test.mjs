import assert from "node:assert/strict";
import { test } from "node:test";
import { keyAction, TOOL_KEYS } from "../../js/src/keys.js";

const key = (k, extra = {}) => keyAction({ key: k, shiftKey: false, ctrlKey: false, metaKey: false, altKey: false, ...extra });

test("tool letters, op toggle, delete, cancel, finish, fit", () => {
  for (const [tool, letter] of Object.entries(TOOL_KEYS)) {
    assert.deepEqual(key(letter), { type: "tool", tool });
    assert.deepEqual(key(letter.toUpperCase(), { shiftKey: true }), { type: "tool", tool });
  }
  assert.deepEqual(Object.values(TOOL_KEYS).sort(), ["b", "d", "o", "p", "r", "s", "v"]);
  assert.deepEqual(key("x"), { type: "toggleOp" });
  assert.deepEqual(key("Delete"), { type: "delete" });
  assert.deepEqual(key("Backspace"), { type: "delete" });
  assert.deepEqual(key("Escape"), { type: "cancel" });
  assert.deepEqual(key("Enter"), { type: "finish" });
  assert.deepEqual(key("f"), { type: "fit" });
});

test("arrows nudge by 1 pixel, 10 with shift; digits set n", () => {
  assert.deepEqual(key("ArrowLeft"), { type: "nudge", dy: 0, dx: -1 });
  assert.deepEqual(key("ArrowDown", { shiftKey: true }), { type: "nudge", dy: 10, dx: 0 });
  assert.deepEqual(key("6"), { type: "spots", n: 6 });
  assert.equal(key("0"), null);
});

test("modified keys and unknown keys are left alone", () => {
  assert.equal(key("d", { ctrlKey: true }), null);
  assert.equal(key("s", { metaKey: true }), null);
  assert.equal(key("q"), null);
  assert.equal(key("F5"), null);
  assert.equal(key("Enter", { shiftKey: true }), null);
});

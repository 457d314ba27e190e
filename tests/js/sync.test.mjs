import assert from "node:assert/strict";
import { test } from "node:test";
import { createModelSync } from "../../js/src/sync.js";

function fakes() {
  const model = {
    state: {},
    saves: [],
    set(key, value) {
      this.state[key] = value;
    },
    save_changes() {
      this.saves.push({ ...this.state });
    },
  };
  const frames = [];
  const clock = {
    requestFrame: (cb) => frames.push(cb),
    cancelFrame: (handle) => {
      frames[handle - 1] = null;
    },
    tick() {
      const due = frames.splice(0);
      for (const cb of due) if (cb) cb();
    },
  };
  return { model, clock };
}

test("updates during a drag go out at most once per animation frame", () => {
  const { model, clock } = fakes();
  const sync = createModelSync(model, clock);
  for (let i = 0; i < 5; i++) sync.schedule({ shapes: [i], dragging: true });
  assert.equal(model.saves.length, 0);
  clock.tick();
  assert.deepEqual(model.saves, [{ shapes: [4], dragging: true }]);
  clock.tick();
  assert.equal(model.saves.length, 1);
  sync.schedule({ shapes: [5], dragging: true });
  sync.schedule({ selected: 0 });
  clock.tick();
  assert.deepEqual(model.saves[1], { shapes: [5], dragging: true, selected: 0 });
});

test("the final state goes out at once on release, and the pending frame sends nothing more", () => {
  const { model, clock } = fakes();
  const sync = createModelSync(model, clock);
  sync.schedule({ shapes: [1], dragging: true });
  sync.flush({ shapes: [2], dragging: false });
  assert.deepEqual(model.saves, [{ shapes: [2], dragging: false }]);
  assert.equal(sync.pending, false);
  clock.tick();
  assert.equal(model.saves.length, 1);
});

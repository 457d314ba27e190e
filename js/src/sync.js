// Sending editor state to the kernel: at most once per animation frame while the user
// drags, at once when a gesture ends.

/**
 * Coalesces model updates. `schedule(changes)` merges changes and sends them (model.set
 * for each key, then one model.save_changes()) on the next animation frame;
 * `flush(changes)` sends everything pending plus `changes` now. `requestFrame` and
 * `cancelFrame` default to window.requestAnimationFrame / cancelAnimationFrame.
 */
export function createModelSync(model, { requestFrame, cancelFrame } = {}) {
  const request = requestFrame ?? ((cb) => window.requestAnimationFrame(cb));
  const cancel = cancelFrame ?? ((handle) => window.cancelAnimationFrame(handle));
  let pending = null;
  let handle = null;

  function send() {
    handle = null;
    if (pending === null) return;
    const changes = pending;
    pending = null;
    for (const [key, value] of Object.entries(changes)) model.set(key, value);
    model.save_changes();
  }

  return {
    schedule(changes) {
      pending = { ...pending, ...changes };
      if (handle === null) handle = request(send);
    },
    flush(changes = {}) {
      if (handle !== null) cancel(handle);
      pending = { ...pending, ...changes };
      send();
    },
    /** Whether changes are waiting for the next frame. */
    get pending() {
      return pending !== null;
    },
    dispose() {
      if (handle !== null) cancel(handle);
      handle = null;
      pending = null;
    },
  };
}

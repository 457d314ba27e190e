// Keyboard shortcuts of the mask editor: key -> action, independent of the DOM.

/** Shortcut letter of each tool (shown in the toolbar's tooltips). */
export const TOOL_KEYS = {
  select: "v",
  disk: "d",
  ring: "r",
  rectangle: "b",
  polygon: "p",
  point: "o",
  spots: "s",
};

const TOOL_BY_KEY = Object.fromEntries(Object.entries(TOOL_KEYS).map(([tool, key]) => [key, tool]));

const NUDGES = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };

/**
 * The editor action of a keydown event ({key, shiftKey, ctrlKey, metaKey, altKey}), or
 * null when the key is not a shortcut (then the event is left to the page). Actions:
 * {type: "tool", tool}, {type: "toggleOp"}, {type: "delete"}, {type: "cancel"},
 * {type: "finish"}, {type: "fit"}, {type: "nudge", dy, dx} (pixels; 10 with Shift),
 * {type: "spots", n} (digits 1-9).
 */
export function keyAction(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return null;
  const key = event.key;
  if (key in NUDGES) {
    const step = event.shiftKey ? 10 : 1;
    const [dy, dx] = NUDGES[key];
    return { type: "nudge", dy: dy * step, dx: dx * step };
  }
  switch (key) {
    case "Delete":
    case "Backspace":
      return { type: "delete" };
    case "Escape":
      return { type: "cancel" };
    case "Enter":
      // Shift+Enter stays with the notebook (run the cell).
      return event.shiftKey ? null : { type: "finish" };
    default:
      break;
  }
  if (key.length !== 1) return null;
  const lower = key.toLowerCase();
  if (lower in TOOL_BY_KEY) return { type: "tool", tool: TOOL_BY_KEY[lower] };
  if (lower === "x") return { type: "toggleOp" };
  if (lower === "f") return { type: "fit" };
  if (key >= "1" && key <= "9") return { type: "spots", n: Number(key) };
  return null;
}

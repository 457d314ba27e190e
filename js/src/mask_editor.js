// anywidget entry of stem_explorer.widgets.MaskEditor: draw detector masks over an image.
// Importing this module touches no DOM; everything happens in render().
import { MaskEditorView } from "./editor.js";

/** Render the editor into `el`; returns the clean-up anywidget calls on removal. */
function render({ model, el }) {
  const view = new MaskEditorView(model, el);
  return () => view.dispose();
}

export default { render };

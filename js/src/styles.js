// Styles of the mask editor, scoped under .se-mask-editor. Colours follow the
// JupyterLab theme variables where they exist, with neutral fallbacks elsewhere.

export const CSS = `
.se-mask-editor {
  display: inline-flex;
  flex-direction: column;
  gap: 3px;
  font-family: var(--jp-ui-font-family, system-ui, sans-serif);
  font-size: 11px;
  color: var(--jp-ui-font-color1, #222);
  outline: none;
  user-select: none;
  -webkit-user-select: none;
}
.se-mask-editor:focus-visible .se-me-stage { box-shadow: 0 0 0 1px var(--jp-brand-color1, #1976d2); }
.se-me-toolbar { display: flex; flex-wrap: wrap; align-items: center; gap: 1px; }
.se-me-button {
  display: inline-flex; align-items: center; justify-content: center;
  width: 22px; height: 22px; padding: 0; margin: 0;
  border: 1px solid transparent; border-radius: 3px;
  background: transparent; color: inherit; cursor: pointer;
}
.se-me-button:hover { background: var(--jp-layout-color2, #eee); }
.se-me-button[aria-pressed="true"] {
  background: var(--jp-layout-color3, #d8d8d8);
  border-color: var(--jp-border-color1, #aaa);
}
.se-me-button[data-op="subtract"][aria-pressed="true"] { color: #d63b3b; }
.se-me-text { width: auto; padding: 0 4px; font-size: 11px; }
.se-me-sep { width: 1px; height: 16px; margin: 0 4px; background: var(--jp-border-color2, #ccc); }
.se-me-spacer { flex: 1; }
.se-me-number { box-sizing: border-box; width: 34px; height: 20px; padding: 0 2px; font-size: 11px; margin-left: 3px; }
.se-me-select { box-sizing: border-box; width: 66px; height: 20px; padding: 0; font-size: 11px; }
.se-me-stage { position: relative; line-height: 0; background: #161616; }
.se-mask-editor-canvas { display: block; touch-action: none; }
.se-me-status {
  display: flex; justify-content: space-between; gap: 8px; min-height: 14px;
  font-family: var(--jp-code-font-family, monospace); font-size: 10.5px;
  color: var(--jp-ui-font-color2, #555);
}
.se-me-hint { color: #c47a00; text-align: right; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.se-me-legend {
  list-style: none; margin: 0; padding: 0; max-height: 98px; overflow-y: auto;
  border-top: 1px solid var(--jp-border-color2, #ddd);
}
.se-me-row {
  display: flex; align-items: center; gap: 6px; padding: 1px 2px; cursor: pointer;
  font-family: var(--jp-code-font-family, monospace); font-size: 10.5px;
}
.se-me-row:hover { background: var(--jp-layout-color2, #f0f0f0); }
.se-me-row.se-me-selected { background: var(--jp-layout-color3, #dde8f3); }
.se-me-index { width: 14px; text-align: right; color: var(--jp-ui-font-color2, #777); }
.se-me-kind { width: 60px; }
.se-me-params { flex: 1; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.se-me-op, .se-me-remove {
  width: 16px; height: 15px; padding: 0; border: 1px solid transparent; border-radius: 2px;
  background: transparent; color: inherit; cursor: pointer; font-size: 11px; line-height: 1;
}
.se-me-op-add { color: #1a8fb8; border-color: #1a8fb8; }
.se-me-op-subtract { color: #d63b3b; border-color: #d63b3b; }
.se-me-remove:hover { background: var(--jp-layout-color3, #ddd); }
`;

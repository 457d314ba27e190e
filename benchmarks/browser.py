"""Browser benchmark: mouse-up on a mask change -> first updated navigation image.

``python -m benchmarks.browser`` starts JupyterLab on 127.0.0.1 with the explorer
notebook on the 256 x 256 x 128 x 128 uint16 sample (embedded LocalCluster), draws a
disk in the mask editor with Chromium's mouse, and times from the pointer-up event (in
the page) to the first WebGL draw of the navigation view's canvas after the new job's
first image has arrived over the websocket (the first partial image on screen; an
earlier draw can be the old image under new colour limits). Prints the median/min/max,
the phases (shapes out, image in, drawn) and a JSON line.

``--raw FILE`` runs it on a raw uint16 file of ``--nav-shape`` x ``--sig-shape`` frames
instead (the 40 GiB file of ``python -m benchmarks --bigdata``), and ``--cold`` drops
that file from the page cache (the workers' and the kernel's mappings released first)
before each mask change: the reduced copy's preview against the issue's 150 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from stem_explorer.browser_testing import detector_point, kernel_client, launch_browser, run_in_kernel, run_notebook, start_server
from stem_explorer.sample import ensure_sample

ROOT = Path(__file__).resolve().parents[1]

# Runs before the page's own scripts: timestamps every WebGL draw per canvas and every
# pointer-up, so latency is measured inside the browser, not across the Playwright link.
INSTRUMENT = """
(() => {
  window.__draws = [];
  window.__pointerUps = [];
  const ids = new WeakMap();
  let next = 0;
  for (const proto of [WebGLRenderingContext.prototype, (window.WebGL2RenderingContext || {}).prototype]) {
    if (!proto) continue;
    for (const name of ['drawArrays', 'drawElements']) {
      const original = proto[name];
      proto[name] = function (...args) {
        const canvas = this.canvas;
        if (!ids.has(canvas)) { ids.set(canvas, ++next); canvas.dataset.drawId = String(next); }
        window.__draws.push([performance.now(), ids.get(canvas)]);
        if (window.__onDraw) window.__onDraw();
        return original.apply(this, args);
      };
    }
  }
  window.addEventListener('pointerup', () => window.__pointerUps.push(performance.now()), true);
  // every websocket message, both ways, with its size: splits the latency into the
  // shapes going out, the kernel's turn, and the image coming in until it is drawn
  window.__ws = [];
  const size = (data) => typeof data === 'string' ? data.length : (data.byteLength ?? data.size ?? 0);
  // what a message is, for --trace: Jupyter's v1 framing (a count, offsets, then the
  // channel, header, parent, metadata, content and buffers); comm messages name the
  // widget state keys they carry
  const decoder = new TextDecoder();
  const describe = (data) => {
    if (!(data instanceof ArrayBuffer) || data.byteLength < 16) return '';
    try {
      const view = new DataView(data);
      const n = Number(view.getBigUint64(0, true));
      const at = (i) => Number(view.getBigUint64(8 * (i + 1), true));
      const part = (i) => JSON.parse(decoder.decode(new Uint8Array(data, at(i), at(i + 1) - at(i))));
      const type = part(1).msg_type;
      const content = part(4);
      if (type === 'status') return `status ${content.execution_state}`;
      if (type !== 'comm_msg') return type;
      const d = content.data || {};
      return `comm ${d.method} ${Object.keys(d.state || d.content || {}).join(',')}` + (n > 7 ? ' +buffers' : '');
    } catch (e) {
      return '?';
    }
  };
  const trace = (way, data) => window.__ws.push([performance.now(), way, size(data), window.__trace ? describe(data) : '']);
  const Original = window.WebSocket;
  const send = Original.prototype.send;
  Original.prototype.send = function (data) {
    trace('out', data);
    return send.call(this, data);
  };
  function Logged(...args) {
    const socket = new Original(...args);
    socket.addEventListener('message', (event) => trace('in', event.data));
    return socket;
  }
  Logged.prototype = Original.prototype;
  Object.assign(Logged, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  window.WebSocket = Logged;
})();
"""

#: Bytes above which an incoming websocket message is taken for an image (the
#: sample's navigation image is 256 KiB, the 40 GiB file's, 5120 x 256 positions shown
#: at the view's resolution, 21 KiB; colour limits, status and echoes are < 1 KiB).
IMAGE_MESSAGE_BYTES = 8 * 1024

# The last mask change, timed from its pointer-up: the first draw of the navigation
# canvas after the first image-sized message that follows the shapes going out (an
# earlier draw can be the old image under new colour limits, which arrive first), and
# the phases in ms: pointer-up to the first message out (the shapes), that to the
# image in (the kernel's turn and the Jupyter server both ways), that to the draw
# (decoding, texture upload, the next animation frame). Resolves with
# [pointer-up time, latency, *phases] when that draw happens (checked from the draw
# hook: polling from Python would load the very cores being measured), or null
# after 30 s.
LATENCY = """
([id, imageBytes]) => new Promise((resolve) => {
  const up = window.__pointerUps[window.__pointerUps.length - 1];
  const timing = () => {
    const out = window.__ws.find(([t, way]) => way === 'out' && t > up);
    if (!out) return null;
    const image = window.__ws.find(([t, way, n]) => way === 'in' && n >= imageBytes && t > out[0]);
    if (!image) return null;
    const draw = window.__draws.find(([t, c]) => c === id && t > image[0]);
    if (!draw) return null;
    return [up, draw[0] - up, out[0] - up, image[0] - out[0], draw[0] - image[0]];
  };
  const finish = (result) => { window.__onDraw = null; clearTimeout(timer); resolve(result); };
  const timer = setTimeout(() => finish(null), 30000);
  window.__onDraw = () => { const result = timing(); if (result) finish(result); };
  window.__onDraw();
})
"""


#: With ``--raw``: the notebook the benchmark runs instead of the project's (a raw file
#: needs its shapes), and what makes the file cold before each mask change.
RAW_NOTEBOOK = """from stem_explorer.widgets import Explorer
explorer = Explorer({path!r}, format="raw", nav_shape={nav}, sig_shape={sig}, dtype="uint16", allow_trailing=True)
explorer"""
MAKE_COLD = """from benchmarks.bigdata import _cold_here_too
print(_cold_here_too(explorer.session.client, {path!r})["resident"])"""


def _raw_notebook(root: Path, raw: Path, nav: tuple, sig: tuple) -> str:
    import nbformat

    code = RAW_NOTEBOOK.format(path=str(raw), nav=tuple(nav), sig=tuple(sig))
    metadata = nbformat.read(root / "explorer.ipynb", as_version=4).metadata  # its kernel: no "Select Kernel" dialog
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)], metadata=metadata)
    nbformat.write(notebook, root / "bench_raw.ipynb")
    return "bench_raw.ipynb"


def measure(repeat: int, nav: tuple, sig: tuple, folder: Path, trace: bool = False, raw: Path = None,
            cold: bool = False) -> dict:
    from playwright.sync_api import sync_playwright

    data = raw or ensure_sample(folder, nav, sig)
    work = Path(tempfile.mkdtemp(prefix="stem-explorer-browser-bench-"))
    root = work / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns("*.h5", ".ipynb_checkpoints"))
    notebook = _raw_notebook(root, raw, nav, sig) if raw else "explorer.ipynb"
    server = start_server("lab", root, work, {"STEM_EXPLORER_DATA": str(data), "PYTHONPATH": str(ROOT)})
    latencies, phases, resident = [], [], []
    try:
        with sync_playwright() as p:
            context = launch_browser(p, work / "profile")
            page = context.new_page()
            page.add_init_script(INSTRUMENT)
            run_notebook(page, server, notebook)
            if trace:
                page.evaluate("() => { window.__trace = true; }")
            page.wait_for_selector(".se-mask-editor[data-image-ready='1']", timeout=300_000)
            client = kernel_client(server.runtime_dir)
            run = lambda code: run_in_kernel(client, code, timeout=3600)  # noqa: E731
            run("explorer.wait(3600)")
            status = run("print(explorer.session.reduced_copy.status)").strip()
            nav_canvas = page.locator(".se-nav-view canvas").first
            cy, cx = sig[0] / 2, sig[1] / 2
            for i in range(repeat + 1):  # the first is a warm-up
                run("explorer.editor.clear(); explorer.wait(3600)")
                if cold:
                    resident.append(float(run(MAKE_COLD.format(path=str(data))).strip().splitlines()[-1]))
                time.sleep(0.5)
                page.click(".se-mask-editor [data-tool='disk']")
                nav_id = int(nav_canvas.get_attribute("data-draw-id") or 0)
                radius = 6 + (i % 5) * 2
                page.mouse.move(*detector_point(page, cy, cx))
                page.mouse.down()
                page.mouse.move(*detector_point(page, cy, cx + radius), steps=3)
                page.mouse.up()
                timed = page.evaluate(LATENCY, [nav_id, IMAGE_MESSAGE_BYTES])
                if timed is None:
                    raise RuntimeError("the new navigation image was not drawn within 30 s of the mouse-up; "
                                       + _what_happened(page, nav_id))
                run("explorer.wait(3600)")
                if i:
                    up, latency, *phase = timed
                    latencies.append(latency)
                    phases.append(phase)
                    if trace:
                        _print_trace(page, up, latency)
            run("explorer.close()")
            client.stop_channels()
            context.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "workload": "browser: mouse-up on a mask change -> first updated navigation image",
        "data": f"{nav[0]}x{nav[-1]}x{sig[0]}x{sig[1]} uint16" + (f" raw {raw}" if raw else " sample"),
        "cold": cold, "resident_before": resident, "reduced_copy": status,
        "repeat": repeat,
        "median_ms": statistics.median(latencies),
        "min_ms": min(latencies),
        "max_ms": max(latencies),
        "all_ms": [round(v, 1) for v in latencies],
        "phases_median_ms": _phase_medians(phases),
    }


def _print_trace(page, up: float, latency: float) -> None:
    """The websocket messages of one mask change, in ms after the pointer-up."""
    messages = page.evaluate("([from, to]) => window.__ws.filter(([t]) => t >= from && t <= to)", [up, up + latency])
    print(f"change: {latency:.1f} ms")
    for t, way, size, what in messages:
        print(f"  +{t - up:6.1f} {way:3} {size:7d} B  {what}")


def _what_happened(page, nav_id: int) -> str:
    """After a mask change that was not timed: the pointer-ups, the messages both ways
    since the last one, and the draws of each canvas (what the benchmark waited for)."""
    seen = page.evaluate("""([id]) => {
      const up = window.__pointerUps[window.__pointerUps.length - 1];
      const draws = {};
      for (const [t, c] of window.__draws) if (up === undefined || t > up) draws[c] = (draws[c] || 0) + 1;
      return {pointerUps: window.__pointerUps.length, navCanvas: id, drawsByCanvas: draws,
              messages: window.__ws.filter(([t]) => up === undefined || t > up).slice(0, 40)
                          .map(([t, way, n]) => `${way} ${n} B at +${(t - up).toFixed(0)} ms`)};
    }""", [nav_id])
    return json.dumps(seen)


def _phase_medians(phases: list) -> dict:
    """Median ms of each phase of the mask changes."""
    names = ("pointer_up_to_message_out", "message_out_to_image_in", "image_in_to_draw")
    return {name: round(statistics.median(p[k] for p in phases), 1) for k, name in enumerate(names)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.browser", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--nav-shape", type=int, nargs=2, default=[256, 256])
    parser.add_argument("--sig-shape", type=int, nargs=2, default=[128, 128])
    parser.add_argument("--dir", default=str(ROOT / "sample_data"))
    parser.add_argument("--trace", action="store_true", help="print every websocket message of each change, decoded")
    parser.add_argument("--raw", type=Path, help="a raw uint16 file of --nav-shape x --sig-shape frames (e.g. the "
                        "--bigdata file) instead of the sample")
    parser.add_argument("--cold", action="store_true", help="drop the file from the page cache before each change")
    args = parser.parse_args(argv)
    result = measure(args.repeat, tuple(args.nav_shape), tuple(args.sig_shape), Path(args.dir), args.trace,
                     raw=args.raw, cold=args.cold)
    print(f"reduced copy: {result['reduced_copy']}")
    print(f"{result['workload']}: median {result['median_ms']:.0f} ms "
          f"(min {result['min_ms']:.0f}, max {result['max_ms']:.0f}; {result['repeat']} runs, {result['data']})")
    print(f"phases (median ms): {result['phases_median_ms']}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())

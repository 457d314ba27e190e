// Bundles the widgets' ES modules (js/src) into stem_explorer/static/ with esbuild and
// records the digest of its inputs (js/digest.mjs) in stem_explorer/static/build-info.json,
// so that stem_explorer.widgets._bundle can tell a stale bundle from a current one.
//
//   node js/build.mjs          build
//   node js/build.mjs --check  exit 0 when the bundle exists and matches its inputs, else 1
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { INPUTS, inputsDigest } from "./digest.mjs";

const root = dirname(dirname(fileURLToPath(import.meta.url)));
const sources = join(root, "js", "src");
const outdir = join(root, "stem_explorer", "static");
const infoPath = join(outdir, "build-info.json");
const entries = ["mask_editor.js"];

function isCurrent() {
  if (!existsSync(infoPath) || !entries.every((name) => existsSync(join(outdir, name)))) {
    return false;
  }
  try {
    return JSON.parse(readFileSync(infoPath, "utf8")).inputs_sha256 === inputsDigest(root);
  } catch {
    return false;
  }
}

async function build() {
  // Imported here so that --check works before `npm ci` has installed esbuild.
  const esbuild = await import("esbuild");
  mkdirSync(outdir, { recursive: true });
  await esbuild.build({
    entryPoints: entries.map((name) => join(sources, name)),
    outdir,
    bundle: true,
    format: "esm",
    target: "es2020",
    logLevel: "warning",
  });
  const info = { inputs: INPUTS, inputs_sha256: inputsDigest(root), entries, esbuild: esbuild.version };
  writeFileSync(infoPath, JSON.stringify(info, null, 2) + "\n");
  console.log(`built ${entries.join(", ")} into ${relative(root, outdir)}/`);
}

if (process.argv.includes("--check")) {
  process.exit(isCurrent() ? 0 : 1);
} else {
  await build();
}

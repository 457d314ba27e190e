// Digest of the bundle's inputs, so that a bundle built from other sources is detected.
//
// sha256 over the regular files of the inputs (files, or folders walked recursively;
// no path component starting with "."), sorted by their UTF-8 path relative to the
// repository root with "/" separators; each file adds `${path}\0${byteLength}\0`
// followed by its bytes. stem_explorer/widgets/_bundle.py computes the same digest.
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, statSync } from "node:fs";
import { join, relative, sep } from "node:path";

/** Inputs of the bundle, relative to the repository root. */
export const INPUTS = ["js/src", "stem_explorer/widgets/colormaps.json"];

function files(path) {
  if (!statSync(path).isDirectory()) return [path];
  const out = [];
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    if (entry.name.startsWith(".")) continue;
    const child = join(path, entry.name);
    if (entry.isDirectory()) out.push(...files(child));
    else if (entry.isFile()) out.push(child);
  }
  return out;
}

/** Hex sha256 digest of INPUTS under the repository `root` (see the module comment). */
export function inputsDigest(root) {
  const all = INPUTS.flatMap((input) => files(join(root, input))).map((path) => ({
    path,
    key: Buffer.from(relative(root, path).split(sep).join("/"), "utf8"),
  }));
  all.sort((a, b) => Buffer.compare(a.key, b.key));
  const hash = createHash("sha256");
  for (const { path, key } of all) {
    const content = readFileSync(path);
    hash.update(key);
    hash.update(`\0${content.length}\0`);
    hash.update(content);
  }
  return hash.digest("hex");
}

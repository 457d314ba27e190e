#!/usr/bin/env bash
# Builds the widgets' JavaScript bundle (js/src -> stem_explorer/static/) with esbuild.
# Safe to re-run: does nothing when stem_explorer/static/build-info.json matches the
# sources (js/src and stem_explorer/widgets/colormaps.json, see js/digest.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "build_js: node and npm are needed to build the MaskEditor's JavaScript bundle" \
       "(js/src -> stem_explorer/static/); install Node.js >= 20 with npm" \
       "(e.g. apt-get install nodejs npm) and re-run: bash scripts/build_js.sh" >&2
  exit 1
fi
if node js/build.mjs --check; then
  exit 0
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
  # No install scripts needed: esbuild's binary comes as an optional dependency package,
  # its postinstall only double-checks it.
  npm ci --no-audit --no-fund --ignore-scripts
  touch node_modules
fi
npm run --silent build

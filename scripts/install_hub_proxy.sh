#!/usr/bin/env bash
# Installs configurable-http-proxy (JupyterHub's proxy, an npm package) into .venv/bin for
# the JupyterHub + dask-gateway tests (tests/test_hub.py). Safe to re-run: does nothing when
# that version is there. Without npm it says so and the hub tests skip with that reason.
set -euo pipefail
cd "$(dirname "$0")/.."
version=5.3.0
if [ "$(.venv/bin/configurable-http-proxy --version 2>/dev/null)" = "$version" ]; then
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: npm is missing, so configurable-http-proxy is not installed; the JupyterHub tests will skip" >&2
  exit 0
fi
# --global with --prefix .venv: the command lands in .venv/bin, the package in .venv/lib/node_modules
npm install --global --prefix .venv --no-audit --no-fund --loglevel=error "configurable-http-proxy@$version"

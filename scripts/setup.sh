#!/usr/bin/env bash
# Installs everything stem_explorer needs; safe to re-run (fast when done).
#   1. Debian packages listed in scripts/debian-packages.txt (browser tests, HDFS tests)
#   2. the Python package with its dev extra into .venv
#   3. the widgets' JavaScript bundle (js/ -> stem_explorer/static/)
#   4. configurable-http-proxy (npm) into .venv/bin, for the JupyterHub tests
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_debian_packages.sh
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
bash scripts/build_js.sh
bash scripts/install_hub_proxy.sh

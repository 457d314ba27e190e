#!/usr/bin/env bash
# Builds the widgets' JavaScript bundle (placeholder until the MaskEditor lands).
set -euo pipefail

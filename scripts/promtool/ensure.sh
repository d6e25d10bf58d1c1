#!/usr/bin/env bash
# Makes sure promtool (used by the alert rule tests) is on PATH: installs the Debian package
# prometheus (only its promtool is used; no recommends, the server is not started) when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v promtool >/dev/null 2>&1; then
  echo "[promtool] installing the Debian package prometheus" >&2
  bash scripts/apt-install.sh --no-install-recommends prometheus
fi
command -v promtool

#!/usr/bin/env bash
# Makes sure amtool and the alertmanager server (used by the Alertmanager configuration tests)
# are on PATH: installs the Debian package prometheus-alertmanager (no recommends) when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v amtool >/dev/null 2>&1; then
  echo "[amtool] installing the Debian package prometheus-alertmanager" >&2
  bash scripts/apt-install.sh --no-install-recommends prometheus-alertmanager
fi
command -v amtool

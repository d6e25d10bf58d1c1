#!/usr/bin/env bash
# Makes sure amtool (used by the Alertmanager configuration tests) is on PATH: installs the
# Debian package prometheus-alertmanager (only its amtool is used; no recommends) when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v amtool >/dev/null 2>&1; then
  echo "[amtool] installing the Debian package prometheus-alertmanager" >&2
  bash scripts/apt-install.sh --no-install-recommends prometheus-alertmanager
fi
command -v amtool

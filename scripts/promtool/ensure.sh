#!/usr/bin/env bash
# Makes sure promtool (used by the alert rule tests) is on PATH: installs the Debian package
# prometheus (only its promtool is used; no recommends, the server is not started) when missing.
set -euo pipefail
if ! command -v promtool >/dev/null 2>&1; then
  echo "[promtool] installing the Debian package prometheus" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
command -v promtool

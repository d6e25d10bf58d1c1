#!/usr/bin/env bash
# Installs Debian packages for the tests and CI (apt-get as root): scripts/apt-install.sh <apt-get install args>
set -euo pipefail
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null

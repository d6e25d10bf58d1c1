#!/usr/bin/env bash
# Installs Debian packages for the tests and CI (apt-get as root): scripts/apt-install.sh <apt-get install args>
# Test files run in parallel and may each need a package (the Kafka mock's librdkafka, amtool,
# promtool): one install at a time (flock), and apt-get waits for a dpkg lock another program
# holds instead of failing at once.
set -euo pipefail
exec 9>"${TMPDIR:-/tmp}/curavani-fleet-apt-install.lock"
flock 9
wait_lock=(-o DPkg::Lock::Timeout=300)
apt-get "${wait_lock[@]}" update -qq
DEBIAN_FRONTEND=noninteractive apt-get "${wait_lock[@]}" install -y -qq "$@" >/dev/null

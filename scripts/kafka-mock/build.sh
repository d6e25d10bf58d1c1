#!/usr/bin/env bash
# Builds the mock Kafka broker used by the tests into var/kafka-mock/kafka-mock.
# Installs librdkafka-dev, pkg-config and gcc (Debian) first when they are missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! command -v gcc >/dev/null 2>&1 || ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists rdkafka; then
  echo "[kafka-mock] installing librdkafka-dev, pkg-config, gcc" >&2
  bash scripts/apt-install.sh librdkafka-dev pkg-config gcc
fi
mkdir -p var/kafka-mock
out=var/kafka-mock/kafka-mock
tmp="$out.$$"
# shellcheck disable=SC2046
gcc -O2 -Wall -o "$tmp" scripts/kafka-mock/kafka-mock.c $(pkg-config --cflags --libs rdkafka)
mv -f "$tmp" "$out"
echo "$out"

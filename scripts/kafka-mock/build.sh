#!/usr/bin/env bash
# Builds the mock Kafka broker used by the tests into var/kafka-mock/kafka-mock.
# Installs librdkafka-dev (Debian) first when pkg-config cannot find rdkafka.
set -euo pipefail
cd "$(dirname "$0")/../.."
if ! pkg-config --exists rdkafka; then
  echo "[kafka-mock] installing librdkafka-dev" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq librdkafka-dev >/dev/null
fi
mkdir -p var/kafka-mock
out=var/kafka-mock/kafka-mock
tmp="$out.$$"
# shellcheck disable=SC2046
gcc -O2 -Wall -o "$tmp" scripts/kafka-mock/kafka-mock.c $(pkg-config --cflags --libs rdkafka)
mv -f "$tmp" "$out"
echo "$out"

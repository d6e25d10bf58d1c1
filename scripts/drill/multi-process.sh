#!/usr/bin/env bash
# Several fleet processes against one PostgreSQL, Redis, bucket folder and drop folder, for
# crash drills. State (folders, logs, pids) under $DRILL_DIR (default /tmp/fleet-multi-drill).
#
#   scripts/drill/multi-process.sh start <n> [roles]   # process n: HTTP port 3100+n, log $DRILL_DIR/logs/p<n>.log
#   scripts/drill/multi-process.sh kill <n> [signal]   # default KILL; TERM prints how long the stop took
#   scripts/drill/multi-process.sh ps                  # which processes run
#   scripts/drill/multi-process.sh check [args]        # scripts/drill/multi-check.ts with the folders filled in
#
# DATABASE_URL, REDIS_URL and QUEUE_PREFIX must be set (your own: the drill drops files into
# folders the fleet deletes from, and kills processes).
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${DATABASE_URL:?set DATABASE_URL}" "${REDIS_URL:?set REDIS_URL}" "${QUEUE_PREFIX:?set QUEUE_PREFIX}"
D=${DRILL_DIR:-/tmp/fleet-multi-drill}
mkdir -p "$D/logs" "$D/pids"
export LOG_PRETTY=false MAIL_OUTBOX_DIR=$D/outbox BACKUP_DIR=$D/backup FAILED_DIR=$D/failed \
  LOCAL_BUCKET_DIR=$D/bucket SCRAPER_DROP_DIR=$D/scraper
export POLL_CRON=${POLL_CRON:-'*/20 * * * * *'} RETRY_BACKOFF_SCALE=${RETRY_BACKOFF_SCALE:-0.1}
case "${1:-}" in
  start)
    n=$2
    roles=${3:-}
    if [[ -f $D/pids/p$n ]] && kill -0 "$(cat "$D/pids/p$n")" 2>/dev/null; then echo "p$n runs already"; exit 1; fi
    ( export HTTP_PORT=$((3100 + n)) FLEET_INSTANCE=p$n
      exec node --import tsx apps/cli/main.ts start ${roles:+--only "$roles"} >>"$D/logs/p$n.log" 2>&1 ) &
    echo $! >"$D/pids/p$n"
    echo "p$n pid $! ${roles:-all roles}"
    ;;
  kill)
    n=$2
    sig=${3:-KILL}
    pid=$(cat "$D/pids/p$n")
    t0=$(date +%s.%N)
    kill -s "$sig" "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    echo "p$n ($pid) $sig: gone after $(echo "$(date +%s.%N) - $t0" | bc) s"
    rm -f "$D/pids/p$n"
    ;;
  ps)
    for f in "$D"/pids/p*; do [[ -e $f ]] || continue; p=$(cat "$f"); kill -0 "$p" 2>/dev/null && echo "$(basename "$f") $p running" || echo "$(basename "$f") $p gone"; done
    ;;
  check)
    shift
    ports=$(for f in "$D"/pids/p*; do [[ -e $f ]] && kill -0 "$(cat "$f")" 2>/dev/null && echo $((3100 + ${f##*/p})); done | paste -sd, -)
    exec npx tsx scripts/drill/multi-check.ts --outbox "$D/outbox" --bucket "$D/bucket" --logs "$D/logs" --ports "$ports" "$@"
    ;;
  *) sed -n 2,12p "$0"; exit 2 ;;
esac

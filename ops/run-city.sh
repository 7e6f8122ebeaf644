#!/usr/bin/env bash
# The main job on a fresh machine: set up, start Kafka and Redis, create the topics, start a
# worker, and run a live city scenario while printing alerts, signal plans and the city's state.
#
#   ops/run-city.sh [--scenario rush-hour|rainstorm] [--minutes 90] [--accel 60] [--seed 7]
#   (options go to `citybrain simulate`)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${CITYBRAIN_VENV:-$repo/.venv}
run_dir=${CITYBRAIN_RUN_DIR:-$repo/.run}
citybrain=$venv/bin/citybrain

"$repo/ops/setup.sh"
CITYBRAIN_PYTHON="$venv/bin/python" "$repo/ops/stack.sh" up
mkdir -p "$run_dir"
# Each run is a city of its own: fresh topics, keys and consumer group.
run_id=city$(date +%Y%m%d%H%M%S)
export CITYBRAIN_TOPIC_PREFIX="$run_id." CITYBRAIN_APP_ID="$run_id" CITYBRAIN_KEY_PREFIX="$run_id"
# The key that turns personal identifiers into tokens: kept outside Kafka and Redis, readable by
# this user only, and made once on a machine that has none.
if [ -z "${CITYBRAIN_PRIVACY_KEYS:-}" ]; then
  keys="$run_dir/privacy.keys"
  [ -s "$keys" ] || (umask 077 && "$venv/bin/python" -c 'import secrets; print("k1:" + secrets.token_hex(32))' > "$keys")
  CITYBRAIN_PRIVACY_KEYS=$(cat "$keys")
  export CITYBRAIN_PRIVACY_KEYS
fi
cd "$run_dir"
"$citybrain" topics

"$citybrain" worker -l warn > "$run_dir/$run_id-worker.log" 2>&1 &
worker=$!
web="http://127.0.0.1:${CITYBRAIN_WEB_PORT:-6066}"
echo "worker metrics: $web/metrics (ops/prometheus scrapes them); city map: $web/map; CAP feed: $web/cap/feed.atom;"
echo "  live state (NGSI-LD): $web/ngsi-ld/v1/entities?type=FloodMonitoring"
trap 'kill $worker 2>/dev/null || true; wait $worker 2>/dev/null || true' EXIT
"$citybrain" watch --quiet-after 20 &
watcher=$!
sleep 8  # let the worker join its group before the city starts talking
"$citybrain" simulate "$@"
wait $watcher
if ! kill -0 $worker 2>/dev/null; then
  echo "the worker stopped; its log:" >&2
  tail -n 50 "$run_dir/$run_id-worker.log" >&2
  exit 1
fi
echo "worker log: $run_dir/$run_id-worker.log; Redis keys: $run_id:*"

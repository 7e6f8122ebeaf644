#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up, lint and type check, start the real Kafka and
# Redis, run pytest.
# Extra arguments go to pytest (e.g. ops/test.sh tests/unit -x); when they name unit tests only,
# the stack is not started: unit tests need neither Kafka nor Redis.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${CITYBRAIN_VENV:-$repo/.venv}
"$repo/ops/setup.sh"
needs_stack=0
for arg in "${@:-tests}"; do
  case "$arg" in
    -*) ;;
    tests/unit|tests/unit/*) ;;
    *) needs_stack=1 ;;
  esac
done
if [ "$needs_stack" = 1 ]; then
  CITYBRAIN_PYTHON="$venv/bin/python" "$repo/ops/stack.sh" up
fi
cd "$repo"
"$venv/bin/ruff" check --quiet .
"$venv/bin/mypy" --no-error-summary
exec "$venv/bin/python" -m pytest -p no:cacheprovider "${@:-tests}"

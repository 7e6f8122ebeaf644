#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up, start the real Kafka and Redis, run pytest.
# Extra arguments go to pytest (e.g. ops/test.sh tests/unit -x).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${CITYBRAIN_VENV:-$repo/.venv}
"$repo/ops/setup.sh"
CITYBRAIN_PYTHON="$venv/bin/python" "$repo/ops/stack.sh" up
cd "$repo"
exec "$venv/bin/python" -m pytest -p no:cacheprovider "${@:-tests}"

#!/usr/bin/env bash
# Run the adrank test suite: bootstrap .venv/ if needed, lint with ruff, then pytest (extra args go to pytest).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
"$ROOT/.venv/bin/ruff" check --quiet "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"

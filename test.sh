#!/usr/bin/env bash
# Run the adrank test suite: bootstrap .venv/ if needed, lint with ruff, type-check
# lib/adrank with mypy, install headless Chromium for the report test if it can (root +
# apt-get; never fatal: without it that test skips), then pytest (extra args go to pytest).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
"$ROOT/.venv/bin/ruff" check --quiet "$ROOT"
"$ROOT/.venv/bin/mypy" --config-file "$ROOT/mypy.ini"
bash "$ROOT/scripts/install_browser.sh" || true
exec "$ROOT/.venv/bin/python" -m pytest "$@"

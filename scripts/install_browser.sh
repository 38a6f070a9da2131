#!/usr/bin/env bash
# Install headless Chromium (Debian's `chromium` package) for the report's browser test.
#
# Idempotent: does nothing when `chromium` is already on PATH. Installs with apt-get only
# when run as root; otherwise prints one line saying why it cannot. The apt output goes
# to .cache/browser.log. Exit status: 0 when chromium is there afterwards, 1 otherwise
# (test.sh calls it with `|| true`: without chromium the browser test skips).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG="$ROOT/.cache/browser.log"

command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install_browser: chromium is not installed and installing it needs root (as root: apt-get install chromium)" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_browser: chromium is not installed and there is no apt-get here: install a Chromium with --headless" >&2
  exit 1
fi
mkdir -p "$ROOT/.cache"
echo "install_browser: installing chromium with apt-get (log: $LOG)" >&2
if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >>"$LOG" 2>&1; then
  exit 0
fi
echo "install_browser: apt-get install chromium failed (see $LOG)" >&2
exit 1

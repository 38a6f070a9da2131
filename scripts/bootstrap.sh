#!/usr/bin/env bash
# Bootstrap the adrank environment on a fresh Debian machine (idempotent).
#
# Creates .venv/ with the pins of constraints.txt, compiles Horovod 0.28.1 against the
# installed TensorFlow (TensorFlow + Gloo, no MPI), checks `horovodrun --check-build`,
# resolves the Delta Lake jars from Maven Central into .cache/jars/, and installs adrank
# itself in editable mode. A second run with everything in place only checks a stamp.
#
# Every failure stops with one line: what went wrong and what to do.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
JARS="$ROOT/.cache/jars"
STAMP="$VENV/.adrank-bootstrap"
PY="${ADRANK_PYTHON:-python3.11}"
DELTA_VERSION="$(sed -n 's/^delta-spark==//p' "$ROOT/constraints.txt")"
HOROVOD_VERSION="$(sed -n 's/^horovod==//p' "$ROOT/constraints.txt")"
LOG="$ROOT/.cache/bootstrap.log"

die() { echo "bootstrap: $*" >&2; exit 1; }
say() { echo "bootstrap: $*" >&2; }

inputs_digest() {  # the checkout's path too: the editable install of adrank points at it
  { cat "$ROOT/constraints.txt" "$ROOT/requirements.txt" "$ROOT/setup.py" "$0"; echo "$ROOT"; } | sha256sum | cut -c1-16
}

check_java() {
  command -v java >/dev/null 2>&1 || die "no 'java' on PATH: install Java 17+ (apt-get install openjdk-17-jdk-headless) or set JAVA_HOME/bin on PATH"
  local major
  major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
  [ "${major:-0}" -ge 17 ] || die "Java $major found, Spark 4 needs Java 17+: install openjdk-17-jdk-headless and put it first on PATH"
}

check_build_tools() {
  local missing=()
  for tool in cmake g++ make mvn; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing ${missing[*]} with apt-get"
      local pkgs=()
      for tool in "${missing[@]}"; do
        case "$tool" in g++) pkgs+=(g++) ;; mvn) pkgs+=(maven) ;; *) pkgs+=("$tool") ;; esac
      done
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}") >>"$LOG" 2>&1 \
        || die "apt-get install ${pkgs[*]} failed (see $LOG)"
    else
      die "missing ${missing[*]}: install them (Debian: apt-get install cmake g++ make maven)"
    fi
  fi
}

make_venv() {
  command -v "$PY" >/dev/null 2>&1 || PY=python3
  "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
    || die "Python 3.11 is required ($PY is $("$PY" --version 2>&1)): install it or set ADRANK_PYTHON"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PY" -m venv "$VENV" 2>>"$LOG" || die "python -m venv failed: on Debian apt-get install python3.11-venv (see $LOG)"
  fi
}

pip_install() {
  "$VENV/bin/pip" install --disable-pip-version-check -q -c "$ROOT/constraints.txt" "$@" >>"$LOG" 2>&1
}

install_python_packages() {
  say "installing pinned packages (first run: several minutes)"
  pip_install --upgrade pip==24.3.1 || die "pip upgrade failed (see $LOG)"
  pip_install -r "$ROOT/requirements.txt" || die "pip install -r requirements.txt failed (see $LOG)"
}

horovod_ok() {
  local out
  out="$("$VENV/bin/horovodrun" --check-build 2>/dev/null)" || return 1
  grep -q '\[X\] TensorFlow' <<<"$out" && grep -q '\[X\] Gloo' <<<"$out"
}

install_horovod() {
  horovod_ok && return 0
  say "compiling horovod==$HOROVOD_VERSION against TensorFlow (first run: about 6 minutes on 2 cores)"
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
  HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS="-j$(nproc)" \
    pip_install --no-build-isolation "horovod==$HOROVOD_VERSION" \
    || die "horovod build failed: check cmake and g++ are installed and TensorFlow imports (see $LOG)"
  horovod_ok || die "horovodrun --check-build does not list TensorFlow and Gloo: rebuild with 'pip install --no-cache-dir --force-reinstall horovod' (see $LOG)"
}

fetch_delta_jars() {
  mkdir -p "$JARS"
  local artifact
  for artifact in "delta-spark_2.13" "delta-storage"; do
    local jar="$JARS/$artifact-$DELTA_VERSION.jar"
    [ -s "$jar" ] && continue
    say "resolving io.delta:$artifact:$DELTA_VERSION from Maven Central"
    mvn -q -B dependency:copy -Dartifact="io.delta:$artifact:$DELTA_VERSION" -DoutputDirectory="$JARS" >>"$LOG" 2>&1 \
      || die "could not fetch io.delta:$artifact:$DELTA_VERSION with Maven (see $LOG)"
  done
}

main() {
  mkdir -p "$ROOT/.cache"
  check_java
  local digest
  digest="$(inputs_digest)"
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$digest" ] && [ -s "$JARS/delta-spark_2.13-$DELTA_VERSION.jar" ]; then
    exit 0
  fi
  : >"$LOG"
  check_build_tools
  make_venv
  install_python_packages
  install_horovod
  pip_install --no-build-isolation --no-deps -e "$ROOT" || die "pip install -e . failed (see $LOG)"
  fetch_delta_jars
  echo "$digest" >"$STAMP"
  say "environment ready in $VENV"
}

main "$@"

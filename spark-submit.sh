#!/usr/bin/env bash
# Submit an adrank job:  ./spark-submit.sh JOB [--conf-file F] [--set key=value ...] [--json] [-- spark-submit options]
#
# Packages lib/ for --py-files, ships the config with --files, adds the Delta jars and
# passes everything after `--` to spark-submit (--master, --deploy-mode, --executor-*,
# --conf ...), so one command runs a job on local[*], a standalone cluster, YARN or
# Kubernetes. Without --master, the config's spark.master is used. `demo` is the sample
# `pipeline` job on conf/local.yaml. The first run bootstraps .venv/ (scripts/bootstrap.sh).
# The job's own options (--json, --debug, --stage, ...) pass through to jobs/JOB.py; a run ends
# with `record: <path>` (its JSON run record), and with the record as one JSON line after --json.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$ROOT/.venv"

usage() {
  echo "usage: $0 JOB [--conf-file F] [--set key=value ...] [--verbose] [--json] [-- spark-submit options]" >&2
  echo "jobs: $(cd "$ROOT/jobs" && ls *.py | sed 's/\.py$//' | tr '\n' ' ')" >&2
  exit 2
}

[ $# -ge 1 ] || usage
JOB="$1"; shift
case "$JOB" in -h|--help) usage ;; esac
if [ ! -f "$ROOT/jobs/$JOB.py" ]; then
  echo "spark-submit.sh: unknown job '$JOB'" >&2; usage
fi

CONF_FILE="$ROOT/conf/local.yaml"
JOB_ARGS=()
SET_ARGS=()  # the --set overrides alone: what the config check before Spark understands
SUBMIT_ARGS=()
VERBOSE=0  # --verbose: the run's log shown live on the console too
while [ $# -gt 0 ]; do
  case "$1" in
    --verbose) JOB_ARGS+=(--verbose); VERBOSE=1; shift ;;
    --conf-file) [ $# -ge 2 ] || usage; CONF_FILE="$2"; shift 2 ;;
    --conf-file=*) CONF_FILE="${1#*=}"; shift ;;
    --set) [ $# -ge 2 ] || usage; JOB_ARGS+=(--set "$2"); SET_ARGS+=(--set "$2"); shift 2 ;;
    --set=*) JOB_ARGS+=(--set "${1#*=}"); SET_ARGS+=(--set "${1#*=}"); shift ;;
    --) shift; SUBMIT_ARGS=("$@"); break ;;
    *) JOB_ARGS+=("$1"); shift ;;
  esac
done
[ -f "$CONF_FILE" ] || { echo "spark-submit.sh: config file not found: $CONF_FILE" >&2; exit 2; }
CONF_FILE="$(cd "$(dirname "$CONF_FILE")" && pwd)/$(basename "$CONF_FILE")"

# Preflight: what Spark needs to start, each missing piece one line and exit status 1 (Java
# before the bootstrap, which needs it too; the Delta jars after it, as it fetches them).
if ! command -v java >/dev/null 2>&1; then
  if [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ]; then
    export PATH="$JAVA_HOME/bin:$PATH"
  else
    why="JAVA_HOME unset"; [ -z "${JAVA_HOME:-}" ] || why="JAVA_HOME=$JAVA_HOME has no bin/java"
    echo "spark-submit.sh: Java 17+ is needed (java not on PATH and $why): install it, e.g. apt-get install openjdk-17-jre-headless" >&2
    exit 1
  fi
fi
bash "$ROOT/scripts/bootstrap.sh"
DELTA_VERSION="$(sed -n 's/^delta-spark==//p' "$ROOT/constraints.txt")"
for jar in "delta-spark_2.13-$DELTA_VERSION.jar" "delta-storage-$DELTA_VERSION.jar"; do
  [ -s "$ROOT/.cache/jars/$jar" ] || {
    echo "spark-submit.sh: Delta jars missing: no $jar in $ROOT/.cache/jars: remove that folder and run again (scripts/bootstrap.sh fetches them from Maven Central with mvn)" >&2
    exit 1
  }
done

# Validate the whole config (exit 2 naming the key) and read the master, before Spark starts.
MASTER="$("$VENV/bin/python" -m adrank.runtime.cli get spark.master --conf-file "$CONF_FILE" "${SET_ARGS[@]}")" || exit 2
has_master=false
for arg in "${SUBMIT_ARGS[@]}"; do
  case "$arg" in --master|--master=*) has_master=true ;; esac
done
$has_master || SUBMIT_ARGS=(--master "$MASTER" "${SUBMIT_ARGS[@]}")

# lib/ as a zip for --py-files (executors import adrank from it).
# Named by its content and never rewritten: a run reads its zip by path while it runs, so a
# concurrent run from the same checkout must not replace it under it.
mkdir -p "$ROOT/.cache/py-files"
ZIP_TMP="$(mktemp "$ROOT/.cache/py-files/.adrank-lib.XXXXXX")"
rm -f "$ZIP_TMP"
(cd "$ROOT/lib" && "$VENV/bin/python" -m zipfile -c "$ZIP_TMP" adrank)
LIB_ZIP="$ROOT/.cache/py-files/adrank-lib-$(sha256sum "$ZIP_TMP" | cut -c1-16).zip"
if [ -f "$LIB_ZIP" ]; then rm -f "$ZIP_TMP"; touch "$LIB_ZIP"; else mv "$ZIP_TMP" "$LIB_ZIP"; fi
find "$ROOT/.cache/py-files" -name "adrank-lib-*.zip" -mtime +7 -delete 2>/dev/null || true
DELTA_JARS="$(ls "$ROOT"/.cache/jars/delta-*.jar | tr '\n' ',' | sed 's/,$//')"

export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$VENV/bin/python}"
export PYSPARK_DRIVER_PYTHON="${PYSPARK_DRIVER_PYTHON:-$VENV/bin/python}"
SPARK_SUBMIT="${SPARK_HOME:+$SPARK_HOME/bin/spark-submit}"
SPARK_SUBMIT="${SPARK_SUBMIT:-$VENV/bin/spark-submit}"

# The run's id and log file (<storage.root>/_runs/<job>-<run id>.log): the job's RunReport takes
# the id, its driver writes there, and the JVM's stderr goes through adrank.runtime.console_filter,
# which logs everything and shows only Spark's progress bar and the job's error line.
RUN_ID="$(date -u +%Y%m%dT%H%M%SZ)-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
LOG="$("$VENV/bin/python" -m adrank.runtime.cli log-file "$JOB" "$RUN_ID" --conf-file "$CONF_FILE" "${SET_ARGS[@]}")" || exit 2
mkdir -p "$(dirname "$LOG")" 2>/dev/null || {  # storage.local not mounted on this machine: a local folder
  LOG="${TMPDIR:-/tmp}/adrank/_runs/$(basename "$LOG")"; mkdir -p "$(dirname "$LOG")"; }
export ADRANK_RUN_ID="$RUN_ID" ADRANK_LOG_FILE="$LOG" ADRANK_VERBOSE="$VERBOSE"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-1}"  # no TensorFlow C++ INFO notices, not even in the log
FILTER=("$VENV/bin/python" -u -m adrank.runtime.console_filter "$LOG" --job "$JOB")
[ "$VERBOSE" = 1 ] && FILTER+=(--verbose)

# A stop (SIGTERM, SIGINT: Ctrl-C, SIGHUP) ends the whole tree: the JVM, the driver, Spark's
# Python workers and the Horovod ranks, which run in sessions of their own (out of reach of a
# signal to this script's process group). The job runs in the background so that the trap runs
# at once; adrank.runtime.processes (this checkout's) sends SIGTERM (whatever the signal: the driver
# and the JVM take SIGTERM as a stop) to every descendant and SIGKILL to what still runs 15 s
# later; the script exits with 128 + the signal's number.
JOB_PID=""
stop_job() {  # $1: the signal's name, $2: its number
  trap '' TERM INT HUP
  echo "spark-submit.sh: SIG$1: stopping $JOB (the JVM, the driver and the training ranks)" >&2
  PYTHONPATH="$ROOT/lib${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m adrank.runtime.processes stop "$$" || true
  [ -z "$JOB_PID" ] || wait "$JOB_PID" 2>/dev/null || true
  echo "spark-submit.sh: $JOB stopped (SIG$1): tables are as a kill leaves them; run again to resume (log: $LOG)" >&2
  exit $((128 + $2))
}
trap 'stop_job TERM 15' TERM
trap 'stop_job INT 2' INT
trap 'stop_job HUP 1' HUP

{ "$SPARK_SUBMIT" \
  --name "adrank-$JOB" \
  --py-files "$LIB_ZIP" \
  --files "$CONF_FILE" \
  --jars "$DELTA_JARS" \
  --conf "spark.driver.extraJavaOptions=-Dlog4j2.configurationFile=file:$ROOT/conf/log4j2.properties" \
  "${SUBMIT_ARGS[@]}" \
  "$ROOT/jobs/$JOB.py" --conf-file "$CONF_FILE" "${JOB_ARGS[@]}" \
  2>&1 1>&3 3>&- | "${FILTER[@]}" 3>&-; } 3>&1 <&0 &  # only stderr through the filter; stdin kept
JOB_PID=$!
rc=0
wait "$JOB_PID" || rc=$?
exit "$rc"

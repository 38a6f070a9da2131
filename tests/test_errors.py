"""Errors a person can act on: real failures (Spark, Delta, the JVM, the OS) explained in one line.

The subprocess tests come first: they start their own short-lived JVM (or none) before the
session's ``spark`` fixture starts the shared one.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from adrank.core import layout
from adrank.core.errors import InputError, error_type, explain, naming_table, summary
from adrank.runtime.runs import run_job
from adrank.storage import delta
from conftest import REPO, TINY_CONF, load_job

DELTA_VERSION = next(line.split("==")[1] for line in (REPO / "constraints.txt").read_text().splitlines()
                     if line.startswith("delta-spark=="))
JAVA_FIX = "install it, e.g. apt-get install openjdk-17-jre-headless"


def path_without_java(tmp_path: Path) -> str:
    """A folder of links to every program on this PATH except ``java``: a machine without Java."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            target = Path(directory, name)
            if name != "java" and not (folder / name).exists() and os.access(target, os.X_OK):
                (folder / name).symlink_to(target)
    assert not (folder / "java").exists()
    return str(folder)


def job_command(job: str, root: Path, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "jobs" / f"{job}.py"), "--conf-file", str(TINY_CONF),
            "--set", f"storage.root={root / 'tables'}", "--set", f"inputs.root={root / 'inputs'}", *args]


def job_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "lib"), "PYSPARK_PYTHON": sys.executable, **extra}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return env


def stored_report(root: Path, job: str) -> dict:
    (stored,) = (root / "tables" / "_runs").glob(f"{job}-*.json")
    return json.loads(stored.read_text())


# --- jobs as a person runs them (subprocesses) ------------------------------------------------

@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_a_job_reading_a_missing_path_exits_1_with_one_line_and_a_traceback_only_with_debug(tmp_path, debug):
    missing = tmp_path / "no-such-run.json"
    command = job_command("report", tmp_path, "--run", str(missing), *(["--debug"] if debug else []))
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=job_env())
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    expected = f"report: error: path not found: file:{missing}: check inputs.root and storage.root in the config"
    assert lines[-1].startswith(expected), lines[-1]
    assert [line for line in lines if line.startswith("report:")] == [lines[-1]]
    assert ("Traceback (most recent call last)" in result.stderr) is debug
    assert ('File "' in result.stderr) is debug  # no Python frame without --debug
    report = stored_report(tmp_path, "report")
    assert report["status"] == "failed" and report["error"] == lines[-1][len("report: error: "):]
    assert report["error_type"] == "AnalysisException"
    (record,) = (tmp_path / "tables" / "_runs").glob("report-*.json")
    assert result.stdout.strip().splitlines()[-1] == f"record: {record}"  # a failed run's record, its path last


def test_a_job_without_java_says_so_in_one_line_and_records_the_run(tmp_path):
    env = job_env(PATH=path_without_java(tmp_path))
    env.pop("JAVA_HOME", None)
    result = subprocess.run(job_command("generate_data", tmp_path), capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("generate_data: error: Spark could not start Java (java not on PATH and JAVA_HOME "
                           "unset): install Java 17+ (e.g. apt-get install openjdk-17-jre-headless)"), last
    assert "Traceback" not in result.stderr
    report = stored_report(tmp_path, "generate_data")  # written without Spark: a local storage.root
    assert report["status"] == "failed" and report["error_type"] == "PySparkRuntimeError"
    assert report["error"] == last[len("generate_data: error: "):]


def test_spark_submit_without_java_stops_before_the_bootstrap_with_one_line(tmp_path):
    env = {"PATH": path_without_java(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run([str(REPO / "spark-submit.sh"), "generate_data", "--conf-file", str(TINY_CONF)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"spark-submit.sh: Java 17+ is needed (java not on PATH and JAVA_HOME unset): {JAVA_FIX}"]
    env["JAVA_HOME"] = str(tmp_path / "no-jdk")
    result = subprocess.run([str(REPO / "spark-submit.sh"), "generate_data", "--conf-file", str(TINY_CONF)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert (result.returncode, result.stderr.splitlines()) == (1, [
        f"spark-submit.sh: Java 17+ is needed (java not on PATH and JAVA_HOME={tmp_path / 'no-jdk'} has no "
        f"bin/java): {JAVA_FIX}"])


def test_spark_submit_without_the_delta_jars_names_the_folder_and_the_fix(tmp_path):
    """A bootstrapped tree (stamp current, delta-spark jar there) that lost its delta-storage jar."""
    root = tmp_path / "checkout"
    for name in ("spark-submit.sh", "scripts/bootstrap.sh", "constraints.txt", "requirements.txt", "setup.py",
                 "jobs/generate_data.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes((REPO / name).read_bytes())
        (root / name).chmod((REPO / name).stat().st_mode)
    jars = root / ".cache" / "jars"
    jars.mkdir(parents=True)
    (jars / f"delta-spark_2.13-{DELTA_VERSION}.jar").write_bytes(b"a jar")
    digest = subprocess.run(["bash", "-c", '{ cat constraints.txt requirements.txt setup.py scripts/bootstrap.sh; '
                             'echo "$(pwd)"; } | sha256sum | cut -c1-16'],
                            cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    (root / ".venv").mkdir()
    (root / ".venv" / ".adrank-bootstrap").write_text(digest + "\n")  # the bootstrap's stamp: a no-op
    result = subprocess.run([str(root / "spark-submit.sh"), "generate_data", "--conf-file", str(TINY_CONF)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"spark-submit.sh: Delta jars missing: no delta-storage-{DELTA_VERSION}.jar in {jars}: remove that folder "
        "and run again (scripts/bootstrap.sh fetches them from Maven Central with mvn)"]


# --- in process, on the session's SparkSession ------------------------------------------------

def raised(action) -> BaseException:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - the test inspects whatever was raised
        return exc
    raise AssertionError("expected an error")


def test_a_missing_input_path(spark, tmp_path):
    missing = tmp_path / "inputs" / "click_log"
    line = explain(raised(lambda: spark.read.json(str(missing)).count()))
    assert line == (f"path not found: file:{missing}: check inputs.root and storage.root in the config "
                    "(--conf-file, --set), or create it (./spark-submit.sh generate_data writes sample inputs)")
    line = explain(raised(lambda: open(tmp_path / "nope.csv")))
    assert line.startswith(f"path not found: {tmp_path / 'nope.csv'}: check inputs.root")


@pytest.mark.parametrize("how", ["DeltaTable.forPath", "read a Parquet folder as Delta", "versionAsOf of Parquet"])
def test_a_missing_delta_table_names_the_job_that_writes_it(spark, config, how):
    from delta.tables import DeltaTable

    path = layout.table_path(config, layout.SKU_EMBEDDINGS)
    if how != "DeltaTable.forPath":
        spark.range(3).write.parquet(path)
    read = {"DeltaTable.forPath": lambda: DeltaTable.forPath(spark, path),
            "read a Parquet folder as Delta": lambda: delta.read_delta(spark, path).count(),
            "versionAsOf of Parquet": lambda: delta.read_delta(spark, path, version=1).count()}[how]
    line = explain(raised(read))
    assert line.replace("file:", "") == (f"no Delta table at {path}: it is written by embed_catalog: run "
                                         "./spark-submit.sh embed_catalog first (or check storage.root in the config)")


def test_a_missing_model_or_model_version(tmp_path):
    from adrank.train import registry

    root = tmp_path / "models"
    line = explain(raised(lambda: registry.latest_model(root, "pairwise")))
    assert line == (f"no registered 'pairwise' model in {root / 'pairwise'}: train one with ./spark-submit.sh train "
                    "--stage pairwise (or check storage.local_root / storage.root in the config)")
    for version in (1, 2):
        (root / "lr" / f"v{version}").mkdir(parents=True)
    line = explain(raised(lambda: registry.version_path(root, "lr", 3)))
    assert line == (f"model version 3 of stage 'lr' not found at {root / 'lr' / 'v3'} (registered versions: 1, 2): "
                    "pick a registered version, or train one with ./spark-submit.sh train --stage lr")


def held_until(gate: Path):
    """A Python UDF ``x == 3`` that, on its first row, says the scan started and waits for ``gate/go``."""
    from pyspark.sql import functions as F

    folder = str(gate)

    @F.udf("boolean")
    def matches(x: int) -> bool:
        import os
        import time

        open(os.path.join(folder, "reading"), "w").close()
        deadline = time.time() + 120
        while not os.path.exists(os.path.join(folder, "go")) and time.time() < deadline:
            time.sleep(0.05)
        return x == 3

    return matches


def commit_first(spark, path: str, gate: Path) -> None:
    """Once the other transaction is reading, append to the table (and commit), then let it go on."""
    deadline = time.time() + 120
    while not (gate / "reading").exists() and time.time() < deadline:
        time.sleep(0.05)
    delta.write_delta(spark.range(10, 12), path)
    (gate / "go").touch()


def test_a_lost_concurrent_commit_is_one_line_naming_the_table_and_nothing_is_half_written(
        spark, config, tmp_path, capsys):
    """A real conflict: a DELETE reads the table, another writer commits an append meanwhile."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    path = layout.table_path(config, layout.SKU_EMBEDDINGS)
    delta.write_delta(spark.range(10).coalesce(1), path)
    gate = tmp_path / "gate"
    gate.mkdir()

    def body(spark_, config_, report):
        other = threading.Thread(target=commit_first, args=(spark, path, gate))
        other.start()
        try:
            with naming_table(path):
                DeltaTable.forPath(spark, path).delete(held_until(gate)(F.col("id")))
        finally:
            other.join()

    assert run_job("embed_catalog", config, body) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"embed_catalog: error: lost a concurrent commit on sku_embeddings ({path}): another run "
                   "committed to it first (its WRITE; ConcurrentAppendException: Files were added to the root of "
                   "the table by a concurrent update); nothing was half-written (Delta commits are atomic): "
                   "rerun the job"]
    report = json.loads(next((Path(config.storage.root) / "_runs").glob("embed_catalog-*.json")).read_text())
    assert report["error"] == err[0][len("embed_catalog: error: "):]
    assert report["error_type"] == "io.delta.exceptions.ConcurrentAppendException"
    ids = sorted(row.id for row in delta.read_delta(spark, path).collect())
    assert ids == list(range(12))  # the append is in, the DELETE of id 3 is not: no half commit


@pytest.mark.parametrize("java_class", [
    "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException", "MetadataChangedException",
    "ConcurrentWriteException", "ConcurrentTransactionException", "ProtocolChangedException",
])
def test_every_delta_conflict_thrown_by_the_jvm_is_a_lost_commit(spark, java_class):
    """Delta's exception, made in the JVM and thrown there (wrapped, as a failed future's join does)."""
    jvm = spark.sparkContext._jvm
    thrown = getattr(jvm.io.delta.exceptions, java_class)("The table was changed by a concurrent update.")
    error = raised(lambda: jvm.java.util.concurrent.CompletableFuture.failedFuture(thrown).join())
    assert error_type(error) == "java.util.concurrent.CompletionException"
    assert explain(error) == (f"lost a concurrent commit on a Delta table: another run committed to it first "
                              f"(its commit; {java_class}: The table was changed by a concurrent update); nothing "
                              "was half-written (Delta commits are atomic): rerun the job")


def test_delta_classes_missing_from_the_jvm(spark):
    jvm = spark.sparkContext._jvm
    line = explain(raised(lambda: jvm.java.lang.Class.forName("io.delta.tables.NoSuchTable")))
    assert line == ("the Delta Lake jars are not on Spark's classpath (io.delta.tables.NoSuchTable not found): rerun "
                    "scripts/bootstrap.sh (it puts them in .cache/jars), and submit with ./spark-submit.sh (it adds "
                    "them with --jars)")


def test_a_port_in_use_in_the_jvm_and_in_python(spark):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        java = raised(lambda: spark.sparkContext._jvm.java.net.ServerSocket(port))
        with socket.socket() as second:
            python = raised(lambda: second.bind(("127.0.0.1", port)))
    assert error_type(java) == "java.net.BindException"
    assert isinstance(python, OSError) and python.errno == errno.EADDRINUSE
    for error in (java, python):
        line = explain(error)
        assert line.startswith("a port is already in use (Address already in use): free it (ss -ltnp shows who "
                               "holds it), or move Spark's ports: --set spark.conf.spark.ui.port=PORT"), line
    wrapped = RuntimeError("java.net.BindException: Address already in use: Service 'SparkUI' failed after 16 "
                           "retries (starting from 4040)! Consider setting spark.ui.port to an available port")
    assert explain(wrapped) == ("a port is already in use (Spark service 'SparkUI'): free it, or give spark.ui.port "
                                "a free port (--set spark.conf.spark.ui.port=PORT)")


def test_out_of_disk_from_python_and_from_the_jvm(spark, tmp_path):
    def write_to_full_disk():
        with open("/dev/full", "w") as full:
            full.write("x")

    python = raised(write_to_full_disk)
    assert isinstance(python, OSError) and python.errno == errno.ENOSPC
    assert explain(python) == ("out of disk space (No space left on device): free space on the disks of storage.root, "
                               "storage.local_root and Spark's scratch folder (spark.local.dir, /tmp by default), or "
                               "point storage.root / storage.local_root / spark.local.dir at a larger disk; then rerun "
                               "the job")
    java = raised(lambda: spark.sparkContext._jvm.java.io.FileOutputStream("/dev/full").write(b"x"))
    assert explain(java) == explain(python)
    named = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "tables" / "x.parquet"))
    line = explain(named)
    assert line.startswith(f"out of disk space writing {tmp_path / 'tables' / 'x.parquet'} (No space left on device; "
                           "filesystem /"), line
    assert "MB free): free space on that filesystem, or point storage.root" in line


def test_one_line_library_errors_keep_their_words_over_their_causes():
    try:
        try:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/latest")
        except FileNotFoundError as cause:
            raise InputError("no held-out day: build more dates") from cause
    except InputError as error:
        assert explain(error) == "no held-out day: build more dates"
    from adrank.train.launch import TrainingFailed

    failed = TrainingFailed("training stage 'lr' failed (horovodrun): rank 1 exited with status 1; no checkpoint yet")
    assert explain(failed) == str(failed)
    assert explain(ValueError("something new")) is None


def test_an_unexplained_error_is_one_line_pointing_at_debug_and_debug_re_raises(spark, config, capsys):
    def body(spark_, config_, report):
        raise ValueError("input folder is odd\nsecond line")

    assert run_job("failing", config, body) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "failing: error: ValueError: input folder is odd (run with --debug for the traceback)"]
    with pytest.raises(ValueError, match="input folder is odd"):
        run_job("failing", config, body, debug=True)


def test_an_explained_error_with_debug_prints_the_traceback_then_the_line(spark, config, tmp_path, capsys):
    def body(spark_, config_, report):
        spark_.read.json(str(tmp_path / "missing")).count()

    assert run_job("failing", config, body, debug=True) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("Traceback (most recent call last)")
    assert err.splitlines()[-1].startswith(f"failing: error: path not found: file:{tmp_path / 'missing'}: ")


def test_an_empty_click_log_is_an_input_error_saying_what_to_do(spark, tmp_path, capsys):
    status = load_job("build_tables").main(["--conf-file", str(TINY_CONF), "--set", f"storage.root={tmp_path / 't'}",
                                            "--set", f"inputs.root={tmp_path / 'inputs'}"])
    assert status == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "build_tables: error: no date=YYYY-MM-DD folders under click_log/ of inputs.root: nothing to build; put the "
        "click log there (a date=YYYY-MM-DD folder of JSON lines per day) or write sample inputs with "
        "./spark-submit.sh generate_data"]


def write_catalog_then_rewrite_it_with_pyarrow(spark, folder: Path) -> tuple[Path, Path]:
    """A Parquet catalog written by Spark (a ``.crc`` beside each file), then one file rewritten
    by another tool (pyarrow: fewer rows, another size) with Spark's old ``.crc`` left beside it."""
    import pyarrow.parquet as pq

    rows = [(sku, f"lamp {sku}", bytes(256), None, 1) for sku in range(40)]
    spark.createDataFrame(rows, "sku_id long, title string, image binary, updated_at timestamp, category_id int") \
        .coalesce(1).write.parquet(str(folder))
    (part,) = folder.glob("part-*.parquet")
    crc = folder / f".{part.name}.crc"
    assert crc.exists()
    size = part.stat().st_size
    pq.write_table(pq.read_table(part).slice(0, 25), part)
    assert part.stat().st_size != size and crc.exists()
    return part, crc


def test_a_parquet_file_rewritten_beside_its_stale_crc_names_the_innermost_cause_and_the_crc(
        spark, tmp_path, capsys):
    """A real build over such a catalog: Spark's error is a wrapper with an empty message
    (``Job aborted ... Exception thrown in awaitResult:``); the cause is two levels down."""
    inputs = tmp_path / "inputs"
    for source in ("click_log", "lr_features"):  # one day, so that the build gets to the catalog
        (inputs / source / "date=2026-11-01").mkdir(parents=True)
    (inputs / "click_log" / "date=2026-11-01" / "part-0.json").write_text(
        '{"impression_id": "i1", "ts": "2026-11-01T10:00:00Z", "user_id": 1, "page": "feed", "ad_sku_id": 1, '
        '"position": 1, "clicked": 0}\n')
    (inputs / "lr_features" / "date=2026-11-01" / "part-0.json").write_text(
        '{"impression_id": "i1", "features": ["a=1"]}\n')
    for source in ("user_snapshots", "sku_snapshots"):
        (inputs / source).mkdir()
        (inputs / source / "part-0.json").write_text(
            '{"entity_id": 1, "valid_from": "2026-11-01T00:00:00Z", "features": ["b=2"]}\n')
    part, crc = write_catalog_then_rewrite_it_with_pyarrow(spark, inputs / "catalog")

    status = load_job("build_tables").main(["--conf-file", str(TINY_CONF), "--set", f"storage.root={tmp_path / 't'}",
                                            "--set", f"inputs.root={inputs}"])
    assert status == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"build_tables: error: ChecksumException: file:{part} does not match its checksum file "
                           f"file:{crc} (at byte "), line
    assert line.endswith(f"if the file is right, delete {crc}, else rewrite the file with Spark; then rerun the job")
    assert "awaitResult" not in line and "--debug" not in line

    error = raised(lambda: spark.read.parquet(str(inputs / "catalog")).count())
    assert error_type(error) == "org.apache.spark.SparkException"  # the wrapper...
    assert summary(error).startswith(f"org.apache.hadoop.fs.ChecksumException: Checksum error: file:{part} at ")
    assert summary(error).endswith(" (inside org.apache.spark.SparkException)")  # ...named, after its cause


def test_an_unknown_wrapped_java_error_is_summarised_by_its_innermost_cause_with_a_message(spark):
    jvm = spark.sparkContext._jvm
    cause = jvm.java.io.IOException("disk /data/3 went away")
    wrapper = jvm.java.lang.RuntimeException("Exception thrown in awaitResult: ", cause)
    error = raised(lambda: jvm.java.util.concurrent.CompletableFuture.failedFuture(wrapper).join())
    assert explain(error) is None
    assert summary(error) == "java.io.IOException: disk /data/3 went away (inside java.util.concurrent.CompletionException)"
    text_only = RuntimeError("org.apache.spark.SparkException: Job aborted: Exception thrown in awaitResult:\n"
                             "\tat org.apache.spark.Foo.bar(Foo.scala:1)\n"
                             "Caused by: org.apache.spark.SparkException: Exception thrown in awaitResult: \n"
                             "Caused by: java.io.EOFException: Reached the end of stream with 12 bytes left to read\n")
    assert summary(text_only) == ("java.io.EOFException: Reached the end of stream with 12 bytes left to read "
                                  "(inside RuntimeError)")
    assert summary(ValueError("input folder is odd\nsecond line")) == "ValueError: input folder is odd"

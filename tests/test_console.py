"""The console a person reads: the JVM stderr filter, the quiet session, the bar, the closing table, a real run."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from adrank.runtime import console
from adrank.runtime.console_filter import ConsoleFilter
from adrank.train.launch import make_settings
from adrank.train.progress import progress_bar
from adrank.train.ranks.progress import ProgressWriter, progress_file, read_progress
from conftest import REPO, TINY_CONF
from test_errors import job_command, job_env, path_without_java

FIXTURE = Path(__file__).parent / "fixtures" / "pipeline_report.json"  # a real tiny pipeline run's JSON line
LIB = REPO / "lib"

BAR_1 = b"\r[Stage 3:=====>                  (1 + 1) / 2]\r"
BAR_2 = b"\r[Stage 3:================>       (2 + 0) / 2][Stage 4:>   (0 + 1) / 1]\r"
CLEAR = b"\r" + b" " * 80 + b"\r"
WARN = b"26/12/03 06:16:45 WARN Utils: Your hostname, vm, resolves to a loopback address\n"
PIL = (b"/x/PIL/Image.py:3368: DecompressionBombWarning: Image size (100000000 pixels) exceeds limit\n"
       b"  warnings.warn(\n")
ERROR = b"generate_data: error: the click log has no rows\n"
STREAM = b"WARNING: Using incubator modules: jdk.incubator.vector\n" + BAR_1 + WARN + BAR_2 + CLEAR + PIL + BAR_1 + ERROR


def filtered(data: bytes, chunk: int, verbose: bool = False) -> tuple[bytes, bytes]:
    """(terminal, log) after feeding ``data`` in chunks of ``chunk`` bytes."""
    terminal, log = bytearray(), io.BytesIO()
    routed = ConsoleFilter(log, terminal.extend, job="generate_data", verbose=verbose)
    for start in range(0, len(data), chunk):
        routed.feed(data[start:start + chunk])
    routed.close()
    return bytes(terminal), log.getvalue()


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 10_000])
def test_filter_shows_the_bar_and_the_error_line_and_logs_the_lines(chunk):
    terminal, log = filtered(STREAM, chunk)
    # The terminal: the bars as Spark wrote them, then the error line on a cleared line.
    assert terminal.startswith(BAR_1 + BAR_2 + CLEAR + BAR_1)
    assert terminal.endswith(ERROR) and b"WARN" not in terminal and b"DecompressionBomb" not in terminal
    assert terminal.count(b"\n") == 1
    # The log: every line, in order, and no progress bar.
    assert log == b"WARNING: Using incubator modules: jdk.incubator.vector\n" + WARN + PIL + ERROR
    assert b"[Stage" not in log and b"\r" not in log


def test_filter_verbose_passes_every_line_and_keeps_a_last_line_without_newline():
    terminal, log = filtered(STREAM + b"last words", 5, verbose=True)
    for line in (WARN, PIL, ERROR, b"last words\n"):
        assert line in terminal and line in log
    assert BAR_2 in terminal


def test_filter_other_jobs_error_lines_and_stray_carriage_returns_are_just_lines():
    terminal, log = filtered(b"train: error: not this job\n\rhalf a bar without end\nError: bad --master\n", 4)
    assert terminal == b"Error: bad --master\n"  # spark-submit's own argument errors are shown
    assert log == b"train: error: not this job\n\rhalf a bar without end\nError: bad --master\n"


def test_filter_process_appends_to_the_log_and_writes_stderr(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("earlier\n")
    done = subprocess.run([sys.executable, "-u", "-m", "adrank.runtime.console_filter", str(log), "--job", "generate_data"],
                          input=STREAM, capture_output=True, env={**os.environ, "PYTHONPATH": str(LIB)}, timeout=60)
    assert done.returncode == 0 and done.stdout == b""
    assert done.stderr.endswith(ERROR) and b"WARN" not in done.stderr
    assert log.read_bytes().startswith(b"earlier\nWARNING: Using incubator") and WARN in log.read_bytes()


SESSION_SCRIPT = textwrap.dedent("""
    import logging, os, subprocess, sys, warnings
    from adrank.runtime import console
    with console.quiet_session("demo", sys.argv[1], verbose=sys.argv[2] == "1"):
        print("a library's print")
        os.write(2, b"a C library on fd 2\\n")
        subprocess.run([sys.executable, "-c", "import sys; print('a child rank', file=sys.stderr)"])
        warnings.warn("a FutureWarning", FutureWarning)
        logging.getLogger("x").warning("a logging warning")
        console.say("demo: adrank line")
        print("demo: error: the one error line", file=sys.stderr)
        print("report: /x/r.html"); print("reported: not this one")
        console.announce_log()
        console.say("record: /x/_runs/demo-1.json")
    print("after the session")
""")


def run_session(tmp_path: Path, verbose: bool) -> tuple[list[str], str, Path]:
    log = tmp_path / "_runs" / "demo-1.log"
    done = subprocess.run([sys.executable, "-c", SESSION_SCRIPT, str(log), "1" if verbose else "0"],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(LIB)}, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines(), done.stderr, log


NOISE = ["reported: not this one", "a library's print", "a C library on fd 2", "a child rank", "a FutureWarning", "a logging warning"]


def test_quiet_session_sends_the_driver_and_its_children_to_the_log(tmp_path):
    lines, stderr, log = run_session(tmp_path, verbose=False)
    assert lines == ["demo: adrank line", "demo: error: the one error line", "report: /x/r.html", f"log: {log}",
                     "record: /x/_runs/demo-1.json", "after the session"]
    assert stderr == ""
    logged = log.read_text()
    for text in [*NOISE, "demo: adrank line", "demo: error: the one error line", "record: /x/_runs/demo-1.json"]:
        assert text in logged, text
    assert "after the session" not in logged


def test_quiet_session_verbose_shows_the_log_live_too(tmp_path):
    lines, _, log = run_session(tmp_path, verbose=True)
    shown = "\n".join(lines)
    for text in NOISE:
        assert text in shown and text in log.read_text(), text
    assert lines[-2:] == ["record: /x/_runs/demo-1.json", "after the session"]  # the job's last line stays last
    assert lines.count(f"log: {log}") == 1


def test_say_without_a_session_is_print(capsys):
    console.say("plain line")
    assert capsys.readouterr().out == "plain line\n"
    assert not console.active()


def test_training_progress_from_rank_0_becomes_a_bar(config):
    settings = make_settings(config, stage="lr", data_version=0, run_id="t")
    stream = io.StringIO()
    with progress_bar(settings, 6, stream):
        writer = ProgressWriter(progress_file(settings), "lr", 0, 6, interval=3600)
        for step in range(1, 7):
            writer.update(step, 0.5 / step)  # throttled: the first and the last step are written
    record = read_progress(progress_file(settings))
    assert (record["step"], record["total"], record["loss"]) == (6, 6, pytest.approx(0.5 / 6))
    out = stream.getvalue()
    assert "lr" in out and "6/6" in out and "loss 0.0833" in out and out.endswith("\n")


def test_a_new_launch_does_not_show_the_last_launchs_progress(config):
    settings = make_settings(config, stage="pairwise", data_version=0)
    ProgressWriter(progress_file(settings), "pairwise", 0, 6).update(6, 0.1)
    stream = io.StringIO()
    with progress_bar(settings, 6, stream):
        pass
    assert "6/6" not in stream.getvalue() and "0/6" in stream.getvalue()


def test_summary_table_of_a_real_pipeline_report():
    report = json.loads(FIXTURE.read_text())
    table = console.summary_table(report)
    lines = table.splitlines()
    assert lines[0] == f"pipeline {report['run_id']}: succeeded in 5 min 48 s"
    source = report["sources"]["click_log"]
    assert re.search(rf"^click_log\s+{source['input']:,}\s+{source['good']:,}\s+{source['quarantined']}$", table, re.M)
    dnn = report["joint"]["comparison"]["dnn"]  # the best module is marked
    assert re.search(rf"^dnn \(best\)\s+{dnn['auc']:.4f}\s+{dnn['cold_auc']:.4f}\s+{dnn['log_loss']:.4f}", table, re.M)
    assert [line.split()[0] for line in lines if re.match(r"^(lr|oracle|dot|product|dnn)\s+\d", line)] == \
        ["lr", "oracle", "dot", "product"]
    assert f"accuracy {report['pairwise']['metrics']['pairwise_accuracy']:.4f}" in table
    assert f"LR baseline: AUC {report['lr']['metrics']['auc']:.4f}" in table
    metrics = report["recommend"]["metrics"]
    assert re.search(rf"^user hit rate@10\s+{metrics['user_hit_rate_at_10']:.4f}\s+"
                     rf"{metrics['user_hit_rate_at_10_embedding']:.4f}\s+{metrics['user_hit_rate_at_10_popularity']:.4f}$",
                     table, re.M)
    assert lines[-1] == f"report: {report['report']['path']}"
    assert "task" not in table  # no task graph figures in this report


def test_summary_table_with_tasks_and_missing_sections():
    report = copy.deepcopy(json.loads(FIXTURE.read_text()))
    report["tasks"] = {"generate_data": {"status": "ran", "seconds": 15.03},
                       "train_joint": {"status": "failed", "seconds": 88.24}, "recommend": {"status": "skipped"}}
    del report["recommend"], report["joint"]["comparison"]["oracle"]
    table = console.summary_table(report)
    assert re.search(r"^train_joint\s+failed\s+88\.2$", table, re.M)
    assert re.search(r"^recommend\s+skipped\s+-$", table, re.M)
    assert "oracle" not in table and "recommendation" not in table
    assert console.summary_table({"job": "generate_data", "run_id": "r", "status": "failed"}) == "generate_data r: failed"


def test_summary_table_says_not_available_for_a_figure_without_ground_truth():
    report = copy.deepcopy(json.loads(FIXTURE.read_text()))
    metrics = report["recommend"]["metrics"]
    metrics["similar_precision_at_10"] = metrics["similar_precision_at_10_popularity"] = None  # no category_id
    dnn = report["joint"]["comparison"]["dnn"]
    dnn["cold_auc"] = float("nan")  # no cold-start rows on the held-out day
    report["lr"]["metrics"]["cold_auc"] = None
    table = console.summary_table(report)
    assert re.search(r"^similar-SKU precision@10\s+not available\s+not available\s+not available$", table, re.M)
    assert re.search(rf"^dnn \(best\)\s+{dnn['auc']:.4f}\s+not available\s+{dnn['log_loss']:.4f}", table, re.M)
    assert "cold AUC not available," in table
    assert re.search(rf"^query recall@10\s+{metrics['query_recall_at_10']:.4f}\s", table, re.M)  # the rest: numbers


# --------------------------------------------------------------------------------
# A real run through spark-submit.sh
# --------------------------------------------------------------------------------

def submit(tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess, dict, Path]:
    """``spark-submit.sh generate_data`` under ``tmp_path``: (the process, its run record, its log)."""
    command = [str(REPO / "spark-submit.sh"), "generate_data", "--conf-file", str(TINY_CONF),
               "--set", f"storage.root={tmp_path / 'tables'}", "--set", f"inputs.root={tmp_path / 'inputs'}",
               *options, "--", "--driver-memory", "768m"]
    done = subprocess.run(command, capture_output=True, timeout=600)  # bytes: text mode would turn \r into \n
    done.stdout, done.stderr = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    (record_line,) = [line for line in lines if line.startswith("record: ")]
    record = Path(record_line.removeprefix("record: "))
    report = json.loads(record.read_text(), parse_constant=lambda name: pytest.fail(f"{name} in JSON"))
    assert record == tmp_path / "tables" / "_runs" / f"generate_data-{report['run_id']}.json"
    log_lines = [line for line in lines if line.startswith("log: ")]
    assert len(log_lines) == 1
    return done, report, Path(log_lines[0].removeprefix("log: "))


def printed_lines(done: subprocess.CompletedProcess) -> list[str]:
    """What a person sees as lines: progress-bar redraws (\\r) are one line, not many."""
    text = re.sub(r"\r[^\r\n]*\r", "", done.stdout + done.stderr)
    return [line for line in text.split("\n") if line.strip()]


def test_a_job_through_spark_submit_prints_a_handful_of_lines_and_logs_the_rest(tmp_path):
    done, report, log = submit(tmp_path)
    lines = printed_lines(done)
    assert len(lines) <= 4, lines
    joined = "\n".join(lines)
    assert "WARN" not in joined and "Warning" not in joined and "Traceback" not in joined
    assert log == tmp_path / "tables" / "_runs" / f"generate_data-{report['run_id']}.log"  # one run id
    record = tmp_path / "tables" / "_runs" / f"generate_data-{report['run_id']}.json"
    assert done.stdout.splitlines()[-2:] == [f"log: {log}", f"record: {record}"]  # the record's path last, no JSON line
    assert not any(line.lstrip().startswith("{") for line in done.stdout.splitlines())
    logged = log.read_text()
    assert "WARNING: Using incubator modules" in logged  # the JVM's stderr
    assert logged.rstrip().endswith(done.stdout.splitlines()[-1]) and "[Stage" not in logged
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", report["run_id"])  # new_run_id's format
    events = [json.loads(line.split(" ", 1)[1]) for line in logged.splitlines() if line.startswith("adrank-event ")]
    assert [e["event"] for e in events] == ["job_started", "job_succeeded"]  # structured lines, in the log only
    assert {e["run_id"] for e in events} == {report["run_id"]} and "adrank-event" not in done.stdout


def test_verbose_shows_the_spark_lines_live_and_json_ends_with_the_record_as_one_line(tmp_path):
    done, report, log = submit(tmp_path, "--verbose", "--json")
    assert "WARNING: Using incubator modules" in done.stderr
    assert report["status"] == "succeeded" and log.is_file()
    lines = done.stdout.splitlines()  # --json: the record's path, then the same record as one JSON line
    record = tmp_path / "tables" / "_runs" / f"generate_data-{report['run_id']}.json"
    assert lines[-2] == f"record: {record}"
    assert json.loads(lines[-1]) == report


@pytest.mark.parametrize(("overrides", "expected"), [
    ([], "{tmp}/tables/_runs/pipeline-R1.log"),
    (["storage.root=s3a://bucket/tables", "storage.local_root=/mnt/shared"], "/mnt/shared/_runs/pipeline-R1.log"),
    (["storage.root=file:///data/tables"], "/data/tables/_runs/pipeline-R1.log"),
])
def test_cli_log_file_is_a_local_path_beside_the_run_reports(tmp_path, overrides, expected):
    command = [sys.executable, "-m", "adrank.runtime.cli", "log-file", "pipeline", "R1", "--conf-file", str(TINY_CONF),
               "--set", f"storage.root={tmp_path / 'tables'}", *[a for o in overrides for a in ("--set", o)]]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(LIB)},
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected.format(tmp=tmp_path) + "\n"


# --------------------------------------------------------------------------------
# Every job: the record's path last, the JSON line with --json
# --------------------------------------------------------------------------------

JOBS = sorted(path.stem for path in (REPO / "jobs").glob("*.py"))
REQUIRED_ARGS = {"train": ("--stage", "lr"), "report": ("--run", "/no/such/run.json")}


@pytest.mark.parametrize("job", JOBS)
def test_every_job_ends_with_its_record_path_and_prints_the_json_line_only_with_json(tmp_path, job):
    """Without Java a job fails before Spark starts (seconds) and still writes its record: the cheap way
    to run every job's own ``main`` with and without ``--json``."""
    env = job_env(PATH=path_without_java(tmp_path))
    env.pop("JAVA_HOME", None)
    command = job_command(job, tmp_path, *REQUIRED_ARGS.get(job, ()))
    plain = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    asked = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=300, env=env)
    assert (plain.returncode, asked.returncode) == (1, 1), plain.stderr[-2000:] + asked.stderr[-2000:]
    assert plain.stderr.strip().splitlines()[-1].startswith(f"{job}: error: Spark could not start Java")

    plain_lines, asked_lines = plain.stdout.strip().splitlines(), asked.stdout.strip().splitlines()
    assert not any(line.startswith("{") for line in plain_lines), plain_lines  # no JSON line unless asked
    assert plain_lines[-1].startswith("record: ") and asked_lines[-2].startswith("record: ")
    plain_record = Path(plain_lines[-1].removeprefix("record: "))
    asked_record = Path(asked_lines[-2].removeprefix("record: "))
    assert {plain_record, asked_record} == set((tmp_path / "tables" / "_runs").glob(f"{job}-*.json"))
    assert plain_record != asked_record and plain_record.name.startswith(f"{job}-")
    assert json.loads(asked_lines[-1]) == json.loads(asked_record.read_text())  # the line is the record
    assert json.loads(plain_record.read_text())["status"] == "failed"

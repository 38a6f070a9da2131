"""The task-graph runner: skip what is current, resume after a failure, force part of the graph.

Small real tasks (Delta tables written and read by the test's own task bodies) stand in for
the pipeline's heavy ones; the runner, the freshness records and Delta are the real ones.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from adrank.core import layout
from adrank.core.errors import InputError
from adrank.orchestration import freshness
from adrank.orchestration.graph import (
    DEMO_TASKS,
    PIPELINE_TASKS,
    Task,
    downstream_of,
    edges,
    table,
    task_names,
)
from adrank.orchestration.pipeline import Selection, run_graph
from adrank.runtime.runs import RunReport
from adrank.storage import delta

TASKS = (
    Task("make", "make", (), (), "cpu", ("sample",), writes=(table("a"),)),
    Task("double", "double", (), ("make",), "cpu", ("features",), reads=(table("a"),), writes=(table("b"),)),
)


@dataclasses.dataclass(frozen=True)
class Rows:
    """A test task's result: how many rows it wrote, under its name in the record."""

    task: str
    rows: int

    def as_json(self) -> dict:
        return {self.task: {"rows": self.rows}}


class Boom(RuntimeError):
    """The failure a test injects into a task."""


def bodies(runs: list[str], fail: set[str] | None = None):
    """Task bodies that write real Delta tables and log their calls in ``runs``."""

    def make(spark, config, report, selection):
        runs.append("make")
        delta.write_delta(spark.range(5).toDF("x"), layout.table_path(config, "a"), mode="overwrite")
        return Rows("make", 5)

    def double(spark, config, report, selection):
        runs.append("double")
        if "double" in (fail or set()):
            raise Boom("double broke")
        source = delta.read_delta(spark, layout.table_path(config, "a"))
        delta.write_delta(source.selectExpr("x * 2 AS x"), layout.table_path(config, "b"), mode="overwrite")
        return Rows("double", source.count())

    return {"make": make, "double": double}


def with_bodies(tasks, runs, fail=None):
    """``tasks`` carrying the test's bodies."""
    found = bodies(runs, fail)
    return tuple(dataclasses.replace(task, body=found[task.name]) for task in tasks)


def run(spark, config, runs, selection=None, fail=None, tasks=TASKS) -> RunReport:
    report = RunReport("pipeline")
    run_graph(spark, config, report, with_bodies(tasks, runs, fail), selection or Selection())
    return report


def test_a_second_run_skips_every_current_task_and_keeps_their_figures(spark, config, capsys, caplog):
    caplog.set_level(logging.INFO, logger="adrank.events")
    runs: list[str] = []
    first = run(spark, config, runs)
    assert runs == ["make", "double"]
    assert [first.figures["tasks"][n]["status"] for n in ("make", "double")] == ["ran", "ran"]
    second = run(spark, config, runs)
    assert runs == ["make", "double"], "a current task ran again"
    assert {n: e["status"] for n, e in second.figures["tasks"].items()} == {"make": "skipped", "double": "skipped"}
    assert second.figures["tasks"]["double"]["from_run"] == first.run_id
    assert second.figures["double"] == {"rows": 5}  # carried from the run that made the outputs
    printed = capsys.readouterr()
    assert "[2/2] double          skipped: current (a v0; from run" in printed.out
    assert "adrank-event" not in printed.err  # outside spark-submit.sh, events go to logging only
    events = [json.loads(r.getMessage().split(" ", 1)[1]) for r in caplog.records if r.name == "adrank.events"]
    finished = [e for e in events if e["event"] == "task_succeeded" and e["task"] == "double"]
    assert len(finished) == 1 and finished[0]["run_id"] == first.run_id
    assert finished[0]["reads"] == {"table:a": 0} and finished[0]["writes"] == {"table:b": 0}
    assert [e["task"] for e in events if e["event"] == "task_skipped"] == ["make", "double"]


def test_a_new_input_version_reruns_the_reader_and_a_touched_output_reruns_its_writer(spark, config):
    runs: list[str] = []
    run(spark, config, runs)
    delta.write_delta(spark.range(7).toDF("x"), layout.table_path(config, "a"), mode="overwrite")
    report = run(spark, config, runs)
    assert runs == ["make", "double", "make", "double"]
    assert report.figures["tasks"]["make"]["reason"] == "a changed since"
    assert report.figures["tasks"]["double"]["reason"] == "new a"


def test_a_config_change_reruns_only_the_tasks_it_shapes(spark, config):
    runs: list[str] = []
    run(spark, config, runs)
    changed = dataclasses.replace(config, features=dataclasses.replace(config.features, hash_bits=12))
    report = run(spark, changed, runs)
    assert runs == ["make", "double", "double"]
    assert report.figures["tasks"]["double"]["reason"] == "its config changed"


def test_other_dates_rerun_the_task_that_takes_them_and_say_so_apart_from_the_config(spark, config):
    import datetime as dt

    dated = (dataclasses.replace(TASKS[0], selection_args=Selection.date_args), TASKS[1])
    runs: list[str] = []
    night = (dt.date(2026, 11, 1), dt.date(2026, 11, 6))
    run(spark, config, runs, Selection(dates=night), tasks=dated)
    same = run(spark, config, runs, Selection(dates=night), tasks=dated)
    assert same.figures["tasks"]["make"]["status"] == "skipped"
    report = run(spark, config, runs, tasks=dated)
    assert report.figures["tasks"]["make"]["reason"] == (
        "asked for the new dates (last run: --from 2026-11-01 --to 2026-11-06)")
    assert freshness.read_record(spark, config, "make").args == []
    assert runs == ["make", "double", "make", "double"]  # the config unchanged: the dates alone rerun it


def test_after_a_failure_the_rerun_resumes_at_the_failed_task(spark, config):
    runs: list[str] = []
    with pytest.raises(Boom):
        run(spark, config, runs, fail={"double"})
    assert freshness.read_record(spark, config, "double") is None
    assert freshness.read_record(spark, config, "make") is not None
    report = run(spark, config, runs)
    assert runs == ["make", "double", "double"]
    assert report.figures["tasks"]["make"]["status"] == "skipped"
    assert report.figures["tasks"]["double"]["reason"] == "no earlier success"
    doubled = sorted(r.x for r in delta.read_delta(spark, layout.table_path(config, "b")).collect())
    assert doubled == [0, 2, 4, 6, 8]


def test_a_failure_marks_the_rest_not_run_and_still_records_the_status(spark, config):
    runs: list[str] = []
    report = RunReport("pipeline")
    with pytest.raises(Boom):
        run_graph(spark, config, report, with_bodies(TASKS, runs, {"double"}), Selection())
    assert report.figures["tasks"]["double"]["status"] == "failed"
    assert report.figures["status"] == "failed" and "double broke" in report.figures["error"]


def test_only_and_from_task_force_their_part_of_the_graph(spark, config):
    runs: list[str] = []
    run(spark, config, runs)
    run(spark, config, runs, Selection(only=("double",)))
    assert runs[2:] == ["double"]
    report = run(spark, config, runs, Selection(from_task="make"))
    assert runs[3:] == ["make", "double"]
    assert report.figures["tasks"]["make"]["reason"] == "asked for"
    with pytest.raises(InputError, match="no task 'nope'"):
        run(spark, config, runs, Selection(only=("nope",)))


def test_the_inputs_digest_sees_a_changed_file(tmp_path, spark):
    (tmp_path / "click_log").mkdir()
    log = tmp_path / "click_log" / "part-0.json"
    log.write_text("{}\n")
    before = freshness.inputs_digest(spark, str(tmp_path))
    assert before is not None and before["files"] == 1
    assert freshness.inputs_digest(spark, str(tmp_path)) == before
    log.write_text("{}\n{}\n")
    assert freshness.inputs_digest(spark, str(tmp_path)) != before
    assert freshness.inputs_digest(spark, f"file://{tmp_path}")["files"] == 1  # through Hadoop too
    assert freshness.inputs_digest(spark, str(tmp_path / "missing")) is None


def test_the_graph_is_the_documented_order_and_demo_adds_the_sample_data_first():
    assert task_names(PIPELINE_TASKS) == (
        "build_tables", "train_pairwise", "embed_catalog", "train_lr", "train_joint", "recommend")
    assert task_names(DEMO_TASKS) == ("generate_data", *task_names(PIPELINE_TASKS))
    assert ("embed_catalog", "train_joint") in edges(PIPELINE_TASKS)
    assert ("train_lr", "train_joint") in edges(PIPELINE_TASKS)
    assert downstream_of(PIPELINE_TASKS, "train_lr") == ("train_lr", "train_joint", "recommend")
    for task in PIPELINE_TASKS:  # every task reads what an upstream task writes
        upstream = {w for other in PIPELINE_TASKS if other.name in task.depends_on for w in other.writes}
        written_before = {w for other in PIPELINE_TASKS[: PIPELINE_TASKS.index(task)] for w in other.writes}
        assert set(task.reads) <= written_before | {"inputs"}, task.name
        assert not task.depends_on or upstream, task.name


def test_a_tables_state_is_its_latest_commit_read_from_the_log_listing(spark, tmp_path):
    path = str(tmp_path / "t")
    assert freshness.table_version(spark, path) is None
    for rows in (3, 4, 5):
        delta.write_delta(spark.range(rows).toDF("x"), path, mode="overwrite")
    assert freshness.table_version(spark, path) == delta.latest_version(spark, path) == 2
    assert freshness.table_version(spark, f"file://{path}") == 2  # through Hadoop too


def test_a_task_line_says_not_available_for_a_figure_without_ground_truth():
    from adrank.orchestration.graph import task_named
    from adrank.orchestration.pipeline import headline as headline_of
    from adrank.recommend.run import Recommendations
    from adrank.train.run import TrainedStage

    def headline(name, figures):
        """The task's headline of the result whose record holds ``figures``."""
        if name == "recommend":
            result = Recommendations({}, {}, {}, figures["recommend"]["metrics"])
        else:
            result = TrainedStage("joint", figures["joint"])
        return headline_of(task_named(PIPELINE_TASKS, name), result)

    recommended = {"recommend": {"metrics": {"similar_precision_at_10": None, "query_recall_at_10": 0.2,
                                             "user_hit_rate_at_10": float("nan")}}}
    assert headline("recommend", recommended) == ("similar P@10 not available, query recall@10 0.200, "
                                                  "user hit@10 not available")
    joint = {"joint": {"best_module": "dot", "comparison": {"dot": {"auc": 0.61, "cold_auc": None},
                                                             "lr": {"auc": 0.6, "cold_auc": 0.55}}}}
    assert headline("train_joint", joint) == "best dot: AUC 0.6100 (LR 0.6000), cold start not available (LR 0.5500)"

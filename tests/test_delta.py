"""Delta I/O: a write/read round trip, commit metadata, time travel, run reports."""

from __future__ import annotations

import json

from chispa import assert_df_equality

from adrank.core.layout import table_path
from adrank.runtime.runs import RunReport, publish_report
from adrank.storage.delta import read_delta, write_delta


def test_delta_round_trip_with_commit_metadata_and_time_travel(spark, config):
    path = table_path(config, "round_trip")
    first = spark.createDataFrame([(1, "a"), (2, "b")], "id long, name string")
    write_delta(first, path, mode="overwrite", commit_info={"run_id": "r1", "rows": 2})
    second = spark.createDataFrame([(3, "c")], "id long, name string")
    write_delta(second, path, mode="append", commit_info={"run_id": "r2", "rows": 1})

    assert_df_equality(read_delta(spark, path), first.union(second), ignore_row_order=True)
    assert_df_equality(read_delta(spark, path, version=0), first, ignore_row_order=True)
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()
    assert [json.loads(h.userMetadata)["run_id"] for h in history] == ["r1", "r2"]


def test_report_is_stored_and_its_path_printed_and_the_json_line_only_when_asked(spark, config, capsys):
    report = RunReport("unit")
    report.figures["rows_in"] = 5
    with report.timed("step"):
        pass
    line = publish_report(spark, config, report)
    stored = config.storage.root + f"/_runs/unit-{report.run_id}.json"
    assert capsys.readouterr().out.splitlines() == [f"record: {stored}"]  # no JSON line by default
    assert json.loads(open(stored).read()) == json.loads(line)
    assert json.loads(line)["rows_in"] == 5

    again = RunReport("unit", figures={"rows_in": 6})
    publish_report(spark, config, again, json_line=True)
    printed = capsys.readouterr().out.splitlines()
    stored = config.storage.root + f"/_runs/unit-{again.run_id}.json"
    assert printed[0] == f"record: {stored}" and len(printed) == 2  # --json: the record's JSON line last
    assert json.loads(printed[1]) == json.loads(open(stored).read()) and json.loads(printed[1])["rows_in"] == 6


def test_a_failing_job_still_publishes_its_report_then_returns_1(spark, config, capsys):
    from adrank.runtime.runs import run_job

    def body(spark_, config_, report):
        report.figures["rows_in"] = 3
        raise ValueError("input folder is empty\nsecond line")

    assert run_job("failing", config, body) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("record: ") and last.endswith(".json")
    report = json.loads(open(last.removeprefix("record: ")).read())
    assert report["status"] == "failed"
    assert report["error"] == "ValueError: input folder is empty"
    assert report["error_type"] == "ValueError"
    assert report["rows_in"] == 3

"""Delta I/O: a write/read round trip, commit metadata, time travel, run reports."""

from __future__ import annotations

import json

from chispa import assert_df_equality

from adrank.delta import read_delta, write_delta
from adrank.layout import table_path
from adrank.runs import RunReport, publish_report


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


def test_report_is_printed_as_one_json_line_and_stored(spark, config, capsys):
    report = RunReport("unit")
    report.figures["rows_in"] = 5
    with report.timed("step"):
        pass
    publish_report(spark, config, report)
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1
    stored = (config.storage.root + f"/_runs/unit-{report.run_id}.json")
    assert json.loads(open(stored).read()) == json.loads(printed[0])
    assert json.loads(printed[0])["rows_in"] == 5


def test_a_failing_job_still_publishes_its_report_then_returns_1(spark, config, capsys):
    from adrank.runs import run_job

    def body(spark_, config_, report):
        report.figures["rows_in"] = 3
        raise ValueError("input folder is empty\nsecond line")

    assert run_job("failing", config, body) == 1
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["status"] == "failed"
    assert report["error"] == "ValueError: input folder is empty"
    assert report["error_type"] == "ValueError"
    assert report["rows_in"] == 3

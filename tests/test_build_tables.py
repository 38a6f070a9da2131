"""build_tables end to end on the tiny generated inputs: counts, idempotence, atomicity."""

from __future__ import annotations

import datetime
import json
from contextlib import ExitStack

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from adrank.core import layout
from adrank.runtime.runs import RunReport
from adrank.sample.generate import generate_inputs
from adrank.storage import delta
from adrank.tables import run as build
from conftest import tiny_config


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    """Tiny inputs generated and built once for the module: (config, manifest, report)."""
    config = tiny_config(tmp_path_factory.mktemp("build"))
    manifest = generate_inputs(spark, config.sample, config.inputs.root)
    report = RunReport("build_tables")
    report.record(build.build_tables(spark, config, report, None))
    return config, manifest, report


def examples(spark, config, version=None):
    return delta.read_delta(spark, layout.table_path(config, layout.TRAINING_EXAMPLES), version)


def quarantine(spark, config):
    return delta.read_delta(spark, layout.table_path(config, layout.QUARANTINE))


def test_every_source_reconciles_with_the_generator_manifest(spark, built):
    config, manifest, report = built
    sources = report.figures["sources"]
    for source, figures in sources.items():
        assert figures["input"] == figures["good"] + figures["quarantined"], source
        assert figures["quarantined"] == sum(manifest["broken_rows"][source].values()), source
    assert examples(spark, config).count() == manifest["good_rows"]["click_log"]
    assert sources["catalog"]["good"] == manifest["good_rows"]["catalog"]


def test_quarantine_rows_carry_source_raw_reason_and_run_id(spark, built):
    config, _, report = built
    rows = quarantine(spark, config).collect()
    click_reasons = {r.reason for r in rows if r.source == "click_log"}
    assert click_reasons == {"bad_json", "unknown_sku", "bad_position", "missing_field", "duplicate_id"}
    catalog_reasons = {r.reason for r in rows if r.source == "catalog"}
    assert catalog_reasons == {"undecodable_image", "oversized_image", "null_id"}
    assert all(r.raw and r.run_id == report.run_id for r in rows)
    assert all(r.input_date is not None for r in rows if r.source in ("click_log", "lr_features"))


def test_rerunning_a_date_gives_identical_rows_and_no_duplicates(spark, built):
    config, manifest, _ = built
    before = examples(spark, config)
    before_rows, quarantined_before = before.count(), quarantine(spark, config).count()
    last_day = max(manifest["dates"])
    report = RunReport("build_tables")
    day = datetime.date.fromisoformat(last_day)
    report.record(build.build_tables(spark, config, report, (day, day)))
    after = examples(spark, config)
    assert_df_equality(after, before, ignore_row_order=True, ignore_nullable=True)
    assert after.count() == before_rows
    assert after.select("impression_id").distinct().count() == before_rows
    assert quarantine(spark, config).count() == quarantined_before
    history = spark.sql(f"DESCRIBE HISTORY delta.`{layout.table_path(config, layout.TRAINING_EXAMPLES)}`")
    latest = json.loads(history.orderBy(F.desc("version")).first().userMetadata)
    assert latest["run_id"] == report.run_id
    assert latest["input_rows"]["click_log"] == report.figures["sources"]["click_log"]["input"]


def test_rerun_with_unchanged_catalog_rewrites_no_sku_image(spark, built):
    config, _, _ = built
    report = RunReport("build_tables")
    with ExitStack() as cached:
        figures = build.build_sku_images(spark, config.features, layout.input_path(config, layout.CATALOG),
                                         layout.table_path(config, layout.SKU_IMAGES), report, cached).figures
    assert (figures["rows_inserted"], figures["rows_updated"], figures["rows_deleted"]) == (0, 0, 0)
    assert figures["rows_copied"] == 0  # no file rewritten either (it was every row)


def test_a_run_failing_mid_write_leaves_the_previous_version_complete(spark, built, monkeypatch):
    config, _, _ = built
    before = examples(spark, config).collect()
    version_before = delta.last_commit_metrics(
        spark, layout.table_path(config, layout.TRAINING_EXAMPLES))["version"]
    real_builder = build.build_examples_with_quarantine

    def poisoned(*args, **kwargs):
        frame, bad = real_builder(*args, **kwargs)
        boom = F.when(F.col("position") > 2, F.raise_error(F.lit("injected failure")))
        return frame.withColumn("position", F.coalesce(boom.cast("int"), F.col("position"))), bad

    monkeypatch.setattr(build, "build_examples_with_quarantine", poisoned)
    with pytest.raises(Exception, match="injected failure"):
        build.build_tables(spark, config, RunReport("build_tables"), None)
    path = layout.table_path(config, layout.TRAINING_EXAMPLES)
    assert delta.last_commit_metrics(spark, path)["version"] == version_before
    assert sorted(examples(spark, config).collect()) == sorted(before)


def test_independent_delta_reader_sees_what_spark_wrote(spark, built):
    """delta-rs resolves the live files of the latest version; pyarrow reads them.

    (deltalake 1.6.6's ``to_pyarrow_table`` fails on partitioned tables with pyarrow 14, so
    the live file list is read directly: the same route the training input takes.)
    """
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    config, _, _ = built
    columns = ["impression_id", "label", "num_sparse_ids", "sparse_ids"]
    live_files = DeltaTable(layout.table_path(config, layout.TRAINING_EXAMPLES)).file_uris()
    theirs = sorted(
        (r["impression_id"], r["label"], r["num_sparse_ids"], tuple(r["sparse_ids"]))
        for f in live_files for r in pq.read_table(f, columns=columns).to_pylist()
    )
    ours = sorted(
        (r.impression_id, r.label, r.num_sparse_ids, tuple(r.sparse_ids))
        for r in examples(spark, config).select(*columns).collect()
    )
    assert theirs == ours

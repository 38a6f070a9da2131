"""The task graph behind the ``pipeline`` job (and ``demo``, its run on the embedded default).

Each step is a function ``(spark, config, report) -> None`` that records its figures in
the report. After the last step (or a failed one) the run's HTML report is written under
``<storage.root>/_reports/`` and its path printed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import SparkSession

from adrank.config import Config
from adrank.runs import RunReport
from adrank.sample.run import generate_data


@dataclass(frozen=True)
class Step:
    """One pipeline step."""

    name: str
    run: Callable[[SparkSession, Config, RunReport], None]


def build_tables(spark: SparkSession, config: Config, report: RunReport) -> None:
    """Build the feature tables for every date of the click log."""
    from adrank.build.run import build_tables as build_all_dates

    build_all_dates(spark, config, report, None)


def train_stage1_and_lr(spark: SparkSession, config: Config, report: RunReport) -> None:
    """Stage 1 (pairwise CNN) and the LR baseline on the latest training examples."""
    from adrank.train.run import train

    for stage in ("pairwise", "lr"):
        train(spark, config, report, stage, None)


def embed_catalog(spark: SparkSession, config: Config, report: RunReport) -> None:
    """Stage 2: embed the catalog with the stage-1 model (incremental after the first run)."""
    from adrank.embed.run import embed_catalog as embed

    embed(spark, config, report)


def train_joint(spark: SparkSession, config: Config, report: RunReport) -> None:
    """Stage 3: the joint model's interaction modules against the LR and the oracle (prints the table)."""
    from adrank.train.run import train

    train(spark, config, report, "joint", None)


def recommend(spark: SparkSession, config: Config, report: RunReport) -> None:
    """Similar SKUs, user and query recommendations from the embeddings, against popularity."""
    from adrank.recommend.run import recommend as recommend_all

    recommend_all(spark, config, report)


STEPS: tuple[Step, ...] = (
    Step("generate_data", generate_data),
    Step("build_tables", build_tables),
    Step("train", train_stage1_and_lr),
    Step("embed_catalog", embed_catalog),
    Step("train_joint", train_joint),
    Step("recommend", recommend),
)


def run_pipeline(spark: SparkSession, config: Config, report: RunReport) -> None:
    """Run every step in order, then write the run's HTML report (a failed run's too) and print its path."""
    try:
        for step in STEPS:
            step.run(spark, config, report)
        report.figures["status"] = "succeeded"  # the report is written before run_job records it
    except Exception as error:
        report.figures.update(status="failed", error=f"{type(error).__name__}: {error}".splitlines()[0][:500])
        raise
    finally:
        _write_report(spark, config, report)


def _write_report(spark: SparkSession, config: Config, report: RunReport) -> None:
    """The HTML report of the run so far; a failure to write it is one line, never the run's error."""
    from adrank.report.run import write_report

    try:
        with report.timed("report"):
            path = write_report(spark, config, report.as_dict())
    except Exception as error:  # noqa: BLE001 - the report must never hide the run's own outcome
        report.figures["report"] = {"error": f"{type(error).__name__}: {error}".splitlines()[0][:300]}
        print(f"pipeline: the HTML report was not written: {report.figures['report']['error']}", flush=True)
        return
    report.figures["report"] = {"path": path}
    print(f"report: {path}", flush=True)

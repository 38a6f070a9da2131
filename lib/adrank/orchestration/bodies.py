"""What each pipeline task runs: the job's run function, called with what the selection gives it.

Each body is a real function that imports its job's ``run`` module when it is called, not
when this module is imported: the graph (:mod:`adrank.orchestration.graph`) is read by light
tools (the scheduled-jobs generator and its test, the README's checks) that must not pay for
pyspark, the image decoders or TensorFlow. A body returns the job's typed result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from adrank.core.config import Config
    from adrank.embed.run import EmbeddedCatalog
    from adrank.orchestration.selection import Selection
    from adrank.recommend.run import Recommendations
    from adrank.runtime.runs import JobResult, RunReport
    from adrank.sample.run import GeneratedData
    from adrank.tables.run import BuiltTables
    from adrank.train.run import TrainedStage

TaskBody = Callable[["SparkSession", "Config", "RunReport", "Selection"], "JobResult | None"]


def generate_data(spark: SparkSession, config: Config, report: RunReport, selection: Selection) -> GeneratedData:
    """The sample inputs."""
    from adrank.sample.run import generate_data as run

    return run(spark, config, report)


def build_tables(spark: SparkSession, config: Config, report: RunReport, selection: Selection) -> BuiltTables:
    """The feature tables, for the selection's dates (none given: the new dates, as a night)."""
    from adrank.tables.run import build_tables as run

    return run(spark, config, report, selection.dates, new_dates=selection.new_dates)


def train_stage(stage: str) -> TaskBody:
    """The body training ``stage`` on the latest ``training_examples`` (forced when the selection names it)."""

    def train(spark: SparkSession, config: Config, report: RunReport, selection: Selection) -> TrainedStage:
        from adrank.train.run import train as run

        forced = f"train_{stage}" in (*selection.only, selection.from_task)
        return run(spark, config, report, stage, None, force=forced)

    train.__name__ = train.__qualname__ = f"train_{stage}"
    return train


def embed_catalog(spark: SparkSession, config: Config, report: RunReport, selection: Selection) -> EmbeddedCatalog:
    """The catalog's embeddings and their serving snapshot."""
    from adrank.embed.run import embed_catalog as run

    return run(spark, config, report)


def recommend(spark: SparkSession, config: Config, report: RunReport, selection: Selection) -> Recommendations:
    """The recommendation tables and their held-out metrics."""
    from adrank.recommend.run import recommend as run

    return run(spark, config, report)

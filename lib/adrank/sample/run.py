"""The generate_data job: write the deterministic sample inputs under ``inputs.root``."""

from __future__ import annotations

from pyspark.sql import SparkSession

from adrank.core.config import Config
from adrank.runtime.runs import RunReport
from adrank.sample.generate import generate_inputs


def generate_data(spark: SparkSession, config: Config, report: RunReport) -> None:
    """Write the sample inputs with the sizes and seed of ``sample.*``; the manifest is the job's figures."""
    with report.timed("generate_data"):
        report.figures["generate_data"] = generate_inputs(spark, config.sample, config.inputs.root)

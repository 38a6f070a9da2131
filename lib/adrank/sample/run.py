"""The generate_data job: write the deterministic sample inputs under ``inputs.root``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession

from adrank.core.config import Config
from adrank.runtime.runs import RunReport
from adrank.sample.generate import generate_inputs


@dataclass(frozen=True)
class GeneratedData:
    """What ``generate_data`` wrote: rows per source, good and broken, and the whole manifest.

    ``manifest`` is ``<inputs.root>/_manifest.json`` as written (seed, sizes, categories,
    click model, the oracle's location); the fields name the figures other code reads.
    """

    good_rows: Mapping[str, int]
    broken_rows: Mapping[str, Mapping[str, int]]
    manifest: Mapping[str, Any]

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> GeneratedData:
        """The result of a run that wrote ``manifest``."""
        return cls(manifest["good_rows"], manifest["broken_rows"], manifest)

    def as_json(self) -> dict[str, Any]:
        """The run record's ``generate_data``: the manifest."""
        return {"generate_data": dict(self.manifest)}


def generate_data(spark: SparkSession, config: Config, report: RunReport) -> GeneratedData:
    """Write the sample inputs with the sizes and seed of ``sample.*``; the manifest is the job's figures."""
    with report.timed("generate_data"):
        return GeneratedData.from_manifest(generate_inputs(spark, config.sample, config.inputs.root))

"""What a stage's driver function is handed: the pinned data and the stage's driver spec.

Contract: :func:`adrank.train.run.train` pins one version of ``training_examples``, splits
its dates, looks the stage up in its table (:data:`adrank.train.run.STAGE_DRIVERS`,
the one lookup by name) and calls the stage's :attr:`DriverStage.run` with a
:class:`PinnedData`. Everything below takes the :class:`PinnedData` (or less) and reads
the stage from it: the rank-side spec (:attr:`DriverStage.rank`) for the ranks, the
headline metrics for registering. :class:`TrainingDataError` is the one-line refusal of
data that cannot train or evaluate a model. pyspark only for type hints.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from adrank.core.errors import InputError
from adrank.train.lineage import FULL, Lineage
from adrank.train.ranks.settings import Stage

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from adrank.core.config import Config
    from adrank.runtime.runs import RunReport

Figures = dict[str, object]
Metrics = dict[str, float | int | None]


class TrainingDataError(InputError):
    """The pinned data cannot train and evaluate a model (one-line message); nothing registered."""


@dataclass(frozen=True)
class DriverStage:
    """One row of the driver's stage table.

    Attributes:
        rank: What the ranks train (:data:`adrank.train.ranks.stages.RANK_STAGES`).
        run: The driver function: materialise, train on the ranks, evaluate, register.
        headline_metrics: Held-out metrics a model is judged by: NaN means it is not registered.
    """

    rank: Stage
    run: Callable[[PinnedData], None]
    headline_metrics: tuple[str, ...]

    @property
    def name(self) -> str:
        """The stage name (``--stage``, checkpoint and registry folder)."""
        return self.rank.name


@dataclass(frozen=True)
class PinnedData:
    """What a stage's driver function gets: the session, config, report and pinned examples.

    Attributes:
        spark: The session.
        config: The job's config.
        report: The run report (``report.figures[stage]`` is ``figures``).
        spec: The stage's row of the driver's table.
        examples: ``training_examples`` at the pinned version.
        version: The pinned version.
        train_dates: Dates trained on (once planned: the lineage's, e.g. only the new ones).
        holdout_dates: Dates held out for evaluation.
        figures: The stage's figures in the report (filled in by the driver).
        rows_per_date: Rows of each date of the pinned examples.
        force: Retrain even inside stage 1's retraining period (a forced task).
        lineages: Per model trained (the stage; stage 3: ``joint_<module>``), how
            (:mod:`adrank.train.lineage`; :func:`adrank.train.warm.planned` fills them in).
    """

    spark: SparkSession
    config: Config
    report: RunReport
    spec: DriverStage
    examples: DataFrame
    version: int
    train_dates: list[dt.date]
    holdout_dates: list[dt.date]
    figures: Figures
    rows_per_date: Mapping[dt.date, int] = field(default_factory=dict)
    force: bool = False
    lineages: Mapping[str, Lineage] = field(default_factory=dict)

    @property
    def stage(self) -> str:
        """The stage name."""
        return self.spec.name

    def lineage(self, name: str = "") -> Lineage:
        """The lineage of model ``name`` (default: the stage); unplanned: a full run on ``train_dates``."""
        found = self.lineages.get(name or self.stage)
        dates = tuple(self.train_dates)
        return found if found is not None else Lineage(FULL, "", dates, dates)

    @property
    def seen_dates(self) -> list[dt.date]:
        """Every date the models will have trained on (cold start is relative to them)."""
        lineage = next(iter(self.lineages.values()), None)
        return list(lineage.dates_trained) if lineage is not None else list(self.train_dates)


__all__ = ["DriverStage", "Figures", "Metrics", "PinnedData", "TrainingDataError"]

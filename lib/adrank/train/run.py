"""The ``train`` job's driver side: pin data, look the stage up once, run its driver function.

Contract: :func:`train` pins one version of ``training_examples``, splits its dates into
training and held-out dates, looks the stage up in :data:`STAGE_DRIVERS` (the one lookup
by name: a row holds the rank-side spec and real function references) and hands a
:class:`~adrank.train.pinned.PinnedData` to the row's driver function
(:func:`adrank.train.pairwise.train_pairwise`, :func:`adrank.train.lr.train_lr`,
:func:`adrank.train.joint.driver.train_joint`), which gives the ranks the live files of
pinned versions (:func:`adrank.train.launch.train_on_ranks`), evaluates on the held-out
dates and exports to the model registry (:func:`adrank.train.registration.register_model`).
Data missing on either side, or a NaN headline metric, raises :class:`TrainingDataError`
(one line) and registers nothing (docs/training.md). TensorFlow is imported inside
functions: the Spark side stays importable without it.

The path from ``jobs/train.py`` to a rank's training loop: ``jobs/train.py`` ->
``train/run.py`` (:func:`train`) -> the stage's driver module (``train/pairwise.py``,
``train/lr.py`` or ``train/joint/driver.py``) -> ``train/launch.py``
(:func:`~adrank.train.launch.train_on_ranks`, :func:`~adrank.train.launch.launch`) ->
``train/ranks/loop.py`` (:func:`~adrank.train.ranks.loop.train_stage`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from pyspark.sql import SparkSession

from adrank.core import layout
from adrank.core.config import Config, TrainConfig
from adrank.runtime.runs import RunReport
from adrank.storage import delta
from adrank.train.evaluate import split_holdout_dates
from adrank.train.joint.driver import train_joint
from adrank.train.lr import train_lr
from adrank.train.pairwise import train_pairwise
from adrank.train.pinned import DriverStage, PinnedData, TrainingDataError
from adrank.train.ranks.stages import RANK_STAGES

# The driver's stage table: a stage's rank-side spec, its driver function, the metrics
# that gate registering. Looked up by name once, in :func:`train`.
STAGE_DRIVERS: dict[str, DriverStage] = {
    driver.name: driver for driver in (
        DriverStage(RANK_STAGES[layout.PAIRWISE], train_pairwise, ("pairwise_accuracy", "pairwise_loss")),
        DriverStage(RANK_STAGES[layout.LR], train_lr, ("auc", "log_loss")),
        DriverStage(RANK_STAGES[layout.JOINT], train_joint, ("auc", "log_loss")),
    )
}
STAGES = tuple(STAGE_DRIVERS)  # the stage names (``--stage`` choices)
INTERACTIONS = ("dot", "product", "dnn", "all")  # ``--interaction`` choices (stage 3)


def with_joint_options(config: Config, interaction: str | None, finetune_cnn: bool) -> Config:
    """The config with the ``train`` job's stage-3 flags applied (None/False keep the config's)."""
    train = config.train
    if interaction is not None:
        train = dataclasses.replace(train, interaction=interaction)
    if finetune_cnn:
        train = dataclasses.replace(train, finetune_cnn=True)
    return dataclasses.replace(config, train=train)


@dataclass(frozen=True)
class TrainedStage:
    """What a ``train`` run left: the stage's figures, as the run record holds them under its name.

    The fields name what the pipeline reads; ``figures`` holds them all (split, rows,
    ``training``, ``metrics``, ``model_version``, ``tracking``; stage 3 ``modules``,
    ``comparison``, ``best_module``).
    """

    stage: str
    figures: Mapping[str, object]

    @property
    def model_version(self) -> object:
        """The registered model version (stage 3: absent, each module has its own)."""
        return self.figures.get("model_version")

    @property
    def metrics(self) -> Mapping[str, object]:
        """The held-out metrics (NaN as None)."""
        return cast("Mapping[str, object]", self.figures.get("metrics") or {})

    @property
    def best_module(self) -> object:
        """Stage 3: the interaction module that ranked best."""
        return self.figures.get("best_module")

    @property
    def comparison(self) -> Mapping[str, Mapping[str, object]]:
        """Stage 3: each model's held-out metrics, the LR and the oracle included."""
        return cast("Mapping[str, Mapping[str, object]]", self.figures.get("comparison") or {})

    def as_json(self) -> dict[str, object]:
        """The run record's ``<stage>``."""
        return {self.stage: dict(self.figures)}


def train(spark: SparkSession, config: Config, report: RunReport, stage: str, version: int | None, *,
          force: bool = False) -> TrainedStage:
    """Train, evaluate and register one stage on a pinned version of ``training_examples``.

    How (``train.mode``; :mod:`adrank.train.lineage`): incremental from the stage's newest
    version on the dates it has not seen, full, or the version kept (nothing new, or stage 1
    inside ``train.pairwise_every_days`` unless ``force``); ``figures`` say which and why.

    The stage's figures fill ``report.figures[stage]`` as they come (a failed run's record
    keeps what was known); the result returned holds them all.

    Raises:
        TrainingDataError: No held-out date, no rows or pairs on a side, or a NaN headline metric.
        ValueError: Unknown stage.
    """
    spec = stage_driver(stage)
    examples_path = layout.table_path(config, layout.TRAINING_EXAMPLES)
    pinned = delta.pin_version(spark, examples_path, version)
    examples = delta.read_delta(spark, examples_path, pinned)
    rows_per_date = {r.date: r["count"] for r in examples.groupBy("date").count().collect()}
    train_dates, holdout_dates = split_holdout_dates(list(rows_per_date), config.train.holdout_days)
    split = {"train_dates": [str(d) for d in train_dates], "holdout_dates": [str(d) for d in holdout_dates]}
    figures = report.figures.setdefault(stage, {})
    figures.update({"training_examples_version": pinned, **split})
    figures["train_rows"] = sum(rows_per_date[d] for d in train_dates)
    figures["holdout_rows"] = sum(rows_per_date[d] for d in holdout_dates)
    require_both_sides(config.train, pinned, sorted(rows_per_date), figures["train_rows"], figures["holdout_rows"])
    with report.timed(f"{stage}_total"):
        spec.run(PinnedData(spark, config, report, spec, examples, pinned, train_dates, holdout_dates, figures,
                            rows_per_date, force))
    return TrainedStage(stage, figures)


def stage_driver(stage: str) -> DriverStage:
    """The row of :data:`STAGE_DRIVERS` of a stage name; ValueError naming the known ones."""
    if stage not in STAGE_DRIVERS:
        raise ValueError(f"unknown training stage {stage!r}; known: {sorted(STAGE_DRIVERS)}")
    return STAGE_DRIVERS[stage]


def require_both_sides(train_config: TrainConfig, pinned: int, dates: list[dt.date], train_rows: int,
                        holdout_rows: int) -> None:
    """TrainingDataError unless the pinned examples have a training and a held-out side."""
    where = (f"training_examples version {pinned} has {len(dates)} date{'' if len(dates) == 1 else 's'} "
             f"({', '.join(str(d) for d in dates) or 'no rows'})")
    holdout = f"train.holdout_days={train_config.holdout_days}"
    if len(dates) < 2:
        raise TrainingDataError(
            f"{where}: training needs at least 2, the last {holdout} held out for evaluation; "
            "build more dates or pin another --version; nothing was trained or registered")
    for side, rows in (("training", train_rows), ("held-out", holdout_rows)):
        if rows == 0:
            raise TrainingDataError(f"{where} but no {side} rows ({holdout}); nothing was trained or registered")


__all__ = ["INTERACTIONS", "STAGES", "STAGE_DRIVERS", "TrainedStage", "TrainingDataError", "require_both_sides",
           "stage_driver", "train", "with_joint_options"]

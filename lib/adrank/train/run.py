"""The ``train`` job's driver side: pin data, run a stage on the Horovod ranks, evaluate, register.

Contract: :func:`train` pins one version of ``training_examples``, splits its dates into
training and held-out dates, and hands a :class:`PinnedData` to the stage's ``driver``
function (:data:`adrank.train.stages.STAGES`), which gives the ranks the live files of
pinned versions (:func:`adrank.train.launch.launch`), evaluates on the held-out dates and
exports to the model registry. Data missing on either side, or a NaN headline metric,
raises :class:`TrainingDataError` (one line) and registers nothing (README, "Training").
TensorFlow is imported inside functions: the Spark side stays importable without it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from adrank.core import layout
from adrank.core.config import Config, TrainConfig
from adrank.core.errors import InputError
from adrank.runtime.runs import RunReport
from adrank.storage import delta
from adrank.train import batches, store
from adrank.train.checkpoints import DataVersion, RankSettings, make_settings
from adrank.train.stages import STAGES as STAGE_TABLE
from adrank.train.stages import stage_spec

if TYPE_CHECKING:
    from adrank.train.ranks.models import JointModel, LinearModel, PairwiseModel

STAGES = tuple(STAGE_TABLE)  # the stage names (``--stage`` choices)
INTERACTIONS = ("dot", "product", "dnn", "all")  # ``--interaction`` choices (stage 3)
Figures = dict[str, object]
Metrics = dict[str, float | int | None]


class TrainingDataError(InputError):
    """The pinned data cannot train and evaluate a model (one-line message); nothing registered."""


@dataclass(frozen=True)
class PinnedData:
    """What a stage's driver function gets: the session, config, report and pinned examples.

    Attributes:
        spark: The session.
        config: The job's config.
        report: The run report (``report.figures[stage]`` is ``figures``).
        stage: The stage name.
        examples: ``training_examples`` at the pinned version.
        version: The pinned version.
        train_dates: Dates trained on.
        holdout_dates: Dates held out for evaluation.
        figures: The stage's figures in the report (filled in by the driver).
    """

    spark: SparkSession
    config: Config
    report: RunReport
    stage: str
    examples: DataFrame
    version: int
    train_dates: list[dt.date]
    holdout_dates: list[dt.date]
    figures: Figures


def with_joint_options(config: Config, interaction: str | None, finetune_cnn: bool) -> Config:
    """The config with the ``train`` job's stage-3 flags applied (None/False keep the config's)."""
    import dataclasses

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


def train(spark: SparkSession, config: Config, report: RunReport, stage: str, version: int | None) -> TrainedStage:
    """Train, evaluate and register one stage on a pinned version of ``training_examples``.

    The stage's figures fill ``report.figures[stage]`` as they come (a failed run's record
    keeps what was known); the result returned holds them all.

    Raises:
        TrainingDataError: No held-out date, no rows or pairs on a side, or a NaN headline metric.
    """
    from adrank.train.evaluate import split_holdout_dates

    spec = stage_spec(stage)
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
    _require_both_sides(config, pinned, sorted(rows_per_date), figures["train_rows"], figures["holdout_rows"])
    with report.timed(f"{stage}_total"):
        spec.run_driver(PinnedData(spark, config, report, stage, examples, pinned,
                                   train_dates, holdout_dates, figures))
    return TrainedStage(stage, figures)


def _require_both_sides(config: Config, pinned: int, dates: list[dt.date], train_rows: int,
                        holdout_rows: int) -> None:
    """TrainingDataError unless the pinned examples have a training and a held-out side."""
    where = (f"training_examples version {pinned} has {len(dates)} date{'' if len(dates) == 1 else 's'} "
             f"({', '.join(str(d) for d in dates) or 'no rows'})")
    holdout = f"train.holdout_days={config.train.holdout_days}"
    if len(dates) < 2:
        raise TrainingDataError(
            f"{where}: training needs at least 2, the last {holdout} held out for evaluation; "
            "build more dates or pin another --version; nothing was trained or registered")
    for side, rows in (("training", train_rows), ("held-out", holdout_rows)):
        if rows == 0:
            raise TrainingDataError(f"{where} but no {side} rows ({holdout}); nothing was trained or registered")


def _require_pairs(pinned: int, pair_rows: dict[str, dict[str, int]], holdout_days: int) -> None:
    """TrainingDataError when a side of the stage-1 pairs is empty after materialising."""
    for name, side in ((layout.PAIRS_TRAIN, "training"), (layout.PAIRS_HOLDOUT, "held-out")):
        if not sum(pair_rows[name].values()):
            raise TrainingDataError(
                f"{name} (from training_examples version {pinned}, train.holdout_days={holdout_days}) "
                f"has no pairs: no clicked impression of the {side} dates has a negative and stored "
                "images; nothing was trained or registered")


def _checked_metrics(stage: str, metrics: dict[str, float | int], pinned: int) -> Metrics:
    """The metrics to register: NaN headline metric -> TrainingDataError; other NaN -> None."""
    undefined = [name for name in stage_spec(stage).headline_metrics if _is_nan(metrics.get(name))]
    if undefined:
        raise TrainingDataError(
            f"{stage} evaluation on the held-out dates of training_examples version {pinned} gives NaN "
            f"{', '.join(undefined)} ({metrics.get('rows', metrics.get('pairs'))} rows; one class only?); "
            "the model was not registered")
    return {name: None if _is_nan(value) else value for name, value in metrics.items()}


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and value != value


def _launch(pinned: PinnedData, data_version: DataVersion, files: dict[str, list[str]],
            holdout_files: dict[str, list[str]], *, train_config: TrainConfig | None = None,
            init_from: str = "", name: str = "", figures: Figures | None = None) -> RankSettings:
    """Trains the stage on the ranks; the settings it ran with (to load the checkpoint).

    ``holdout_files`` (per role, live files of the held-out side) give the ranks the sample
    of the training curve's held-out metric. ``train_config`` replaces ``config.train``
    (one stage-3 module); ``name`` labels the timing (default: the stage); ``figures``
    receive ``training`` (default: the stage's).
    """
    from adrank.train.launch import launch

    stage, report = pinned.stage, pinned.report
    settings = make_settings(pinned.config, stage=stage, data_version=data_version, files=files,
                             holdout_files=holdout_files, run_id=report.run_id, train=train_config,
                             init_from=init_from)
    with report.timed(f"{name or stage}_training"):
        result = launch(settings)
    (pinned.figures if figures is None else figures)["training"] = {
        k: result[k] for k in ("start_step", "final_step", "steps_run", "seconds", "steps_per_s", "loss", "ranks",
                               "launcher", "losses", "tensorboard_dir", "holdout_curve")
        if k in result
    }
    return settings


def train_pairwise(pinned: PinnedData) -> None:
    """Stage 1: pairs from the pinned examples, 2 ranks, held-out pairwise accuracy, P@10."""
    from adrank.train.evaluate import catalog_precision, evaluate_pairs
    from adrank.train.pairs import stage1_pairs, with_images
    from adrank.train.ranks.loop import load_trained

    spark, config, figures = pinned.spark, pinned.config, pinned.figures
    images = delta.read_delta(spark, layout.table_path(config, layout.SKU_IMAGES))
    pair_versions = {}
    for name, dates in ((layout.PAIRS_TRAIN, pinned.train_dates), (layout.PAIRS_HOLDOUT, pinned.holdout_dates)):
        pairs, figures[f"{name}_dropped_without_image"] = with_images(
            stage1_pairs(pinned.examples.where(F.col("date").isin(dates)), images), images)
        pair_versions[name] = store.write_pairs(spark, config, pairs, name)
    pair_rows = {name: store.rows_per_kind(spark, config, name)
                 for name in (layout.PAIRS_TRAIN, layout.PAIRS_HOLDOUT)}
    figures["pair_rows"], figures["holdout_pair_rows"] = pair_rows[layout.PAIRS_TRAIN], pair_rows[layout.PAIRS_HOLDOUT]
    _require_pairs(pinned.version, pair_rows, config.train.holdout_days)
    files = store.pair_files(spark, config, layout.PAIRS_TRAIN, pair_versions[layout.PAIRS_TRAIN])
    holdout_files = store.pair_files(spark, config, layout.PAIRS_HOLDOUT, pair_versions[layout.PAIRS_HOLDOUT])
    data_version = {layout.TRAINING_EXAMPLES: pinned.version, **pair_versions}
    settings = _launch(pinned, data_version, files, holdout_files)
    model = load_trained(settings)[layout.PAIRWISE]
    with pinned.report.timed("pairwise_evaluation"):
        holdout = delta.read_delta(spark, layout.table_path(config, layout.PAIRS_HOLDOUT))
        metrics = evaluate_pairs(model, batches.pair_batches(holdout))
        metrics.update(catalog_precision(model.embed_sku, batches.catalog_batches(images)))
    _register(pinned, data_version, metrics, pairwise_model=model)


def train_lr(pinned: PinnedData) -> None:
    """The LR baseline over hashed ids; AUC and log loss overall and on cold-start ads."""
    import tensorflow as tf

    from adrank.train.evaluate import evaluate_ranking
    from adrank.train.ranks.loop import load_trained

    spark, examples = pinned.spark, pinned.examples
    path = layout.table_path(pinned.config, layout.TRAINING_EXAMPLES)
    files, holdout_files = ([f for d in dates for f in delta.live_files(spark, path, pinned.version, {"date": str(d)})]
                            for dates in (pinned.train_dates, pinned.holdout_dates))
    settings = _launch(pinned, pinned.version, {"examples": files}, {"examples": holdout_files})
    model = load_trained(settings)[layout.LR]
    with pinned.report.timed("lr_evaluation"):
        trained = examples.where(F.col("date").isin(pinned.train_dates))
        seen = [r.ad_sku_id for r in trained.select("ad_sku_id").distinct().collect()]
        holdout = examples.where(F.col("date").isin(pinned.holdout_dates))
        metrics = evaluate_ranking(lambda b: tf.sigmoid(model(b, training=False)),
                                   batches.example_batches(holdout), seen)
    _register(pinned, {layout.TRAINING_EXAMPLES: pinned.version}, metrics, linear_model=model)


def _register(pinned: PinnedData, data_version: DataVersion, metrics: dict[str, float | int], *,
              pairwise_model: PairwiseModel | None = None, linear_model: LinearModel | None = None,
              joint_model: JointModel | None = None, figures: Figures | None = None,
              details: Figures | None = None, train_config: TrainConfig | None = None, name: str = "") -> None:
    """Checks the metrics (into the figures, NaN as null, even when refused), exports the model, tracks it.

    ``figures`` receive ``metrics``, ``model_version`` and ``tracking`` (where the MLflow run
    went, or its error; default: the stage's figures); ``details`` go into the model's
    metadata; ``train_config`` (default ``config.train``) is what MLflow records as params
    and ``name`` (a stage-3 module) prefixes its keys there.
    """
    from adrank.core.config import config_as_dict
    from adrank.train.registry import export_model

    config = pinned.config
    figures = pinned.figures if figures is None else figures
    figures["metrics"] = metrics  # in the report (NaN as null) even when refused below
    figures["metrics"] = checked = _checked_metrics(pinned.stage, metrics, pinned.version)
    model_version, model_path = export_model(
        layout.registry_root(config), pinned.stage, image_size=config.features.image_size,
        data_version=data_version, config=config_as_dict(config), metrics=checked,
        run_id=pinned.report.run_id, pairwise_model=pairwise_model, linear_model=linear_model,
        joint_model=joint_model, embedding_dim=config.train.embedding_dim, details=details,
    )
    figures["model_version"] = model_version
    figures["tracking"] = _track(pinned, data_version, checked, model_path, model_version,
                                 train_config or config.train, name)


def _track(pinned: PinnedData, data_version: DataVersion, metrics: Metrics, model_path: str, model_version: int,
           train_config: TrainConfig, name: str) -> Figures:
    """The registered model to MLflow (:func:`adrank.runtime.tracking.track_stage`, which never raises)."""
    from adrank.core.config import config_as_dict
    from adrank.runtime.tracking import track_stage

    with pinned.report.timed(f"{pinned.stage}{'_' + name if name else ''}_tracking"):
        return track_stage(pinned.config, pinned.report.run_id, pinned.stage, config_as_dict(train_config),
                           metrics, model_path, model_version, data_version=data_version, name=name)


__all__ = ["INTERACTIONS", "STAGES", "PinnedData", "TrainedStage", "TrainingDataError", "train", "train_lr", "train_pairwise",
           "with_joint_options"]

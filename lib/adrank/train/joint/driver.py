"""Stage 3's driver: the joint model (LR + an interaction of embeddings), each module against the LR and the oracle.

Contract: :func:`train_joint` (the ``joint`` row of :data:`adrank.train.run.STAGE_DRIVERS`)
pins ``sku_embeddings`` next to the pinned ``training_examples``
(:mod:`adrank.train.joint.inputs`), materialises the context and ad embeddings of every
example as fixed-width columns (:mod:`adrank.train.joint.examples`) into ``joint_examples_train`` / ``joint_examples_holdout``,
trains each interaction module of ``train.interaction`` (``all``: dot, product, dnn) on
the Horovod ranks from the live files of the pinned train table, and evaluates every
model on the same held-out rows: the registered LR (its ``lr_score`` signature), each
module, and the oracle (the generator's true click probability, when the inputs have
it). Each module is registered as a version of the ``joint`` stage, worst first, so
``latest`` is the module with the best held-out AUC. The report's ``comparison`` holds
one row per model: AUC and log loss overall, on cold-start impressions and per page,
with the row counts (:mod:`adrank.train.joint.comparison`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from adrank.context.behaviour import behaviour_embeddings, clicks_for_dates
from adrank.context.towers import query_vectors
from adrank.core import layout
from adrank.runtime.console import say_table
from adrank.storage import delta
from adrank.train import batches, store
from adrank.train.evaluate import evaluate_ranking
from adrank.train.joint.comparison import auc_order, comparison_row, comparison_table
from adrank.train.joint.examples import blank_png, joint_examples
from adrank.train.joint.inputs import EmbeddingInputs, pinned_embeddings
from adrank.train.joint.oracle import oracle_metrics
from adrank.train.launch import train_on_ranks
from adrank.train.lineage import model_shape
from adrank.train.ranks.loop import load_trained
from adrank.train.ranks.settings import last_checkpoint_path
from adrank.train.registration import register_model
from adrank.train.registry import latest_model
from adrank.train.warm import is_kept, keep, planned

if TYPE_CHECKING:
    from adrank.train.pinned import Figures, PinnedData

MODULES = ("dot", "product", "dnn")


def train_joint(pinned: PinnedData) -> None:
    """Materialise, train every module of ``train.interaction``, evaluate all, register, compare."""
    spark, config, figures = pinned.spark, pinned.config, pinned.figures
    kinds = MODULES if config.train.interaction == "all" else (config.train.interaction,)
    embeddings = pinned_embeddings(spark, layout.table_path(config, layout.SKU_EMBEDDINGS),
                                   layout.registry_root(config))
    figures.update(sku_embeddings_version=embeddings.version, embedding_model_version=embeddings.model_version,
                   interactions=list(kinds), finetune_cnn=config.train.finetune_cnn)
    pinned = planned(pinned, {f"joint_{k}": model_shape(config, layout.JOINT, k, embeddings.model_version)
                              for k in kinds}, {f"joint_{k}": {"interaction": k} for k in kinds})
    if is_kept(pinned):
        return keep(pinned)
    with pinned.report.timed("joint_materialise"):
        versions = materialise(pinned, embeddings)
    figures["joint_examples_versions"] = versions
    data_version = {layout.TRAINING_EXAMPLES: pinned.version, layout.SKU_EMBEDDINGS: embeddings.version, **versions}
    train_path = layout.table_path(config, layout.JOINT_TRAIN)
    files = {"joint_examples": delta.live_files(spark, train_path, versions[layout.JOINT_TRAIN])}
    holdout_path = layout.table_path(config, layout.JOINT_HOLDOUT)
    holdout_files = {"joint_examples": delta.live_files(spark, holdout_path, versions[layout.JOINT_HOLDOUT])}
    seen = _seen_ad_skus(pinned)
    holdout = delta.read_delta(spark, holdout_path, versions[layout.JOINT_HOLDOUT])
    comparison: dict[str, Any] = {"lr": lr_baseline(pinned, holdout, seen), "oracle": oracle(pinned, seen)}
    trained: dict[str, Any] = {}
    checkpoints: dict[str, str] = {}
    modules: dict[str, Figures] = {}
    figures["modules"] = modules
    for kind in kinds:
        module: Figures = pinned.lineage(f"joint_{kind}").figures()
        modules[kind] = module
        train_config = dataclasses.replace(config.train, interaction=kind)
        settings = train_on_ranks(pinned, data_version, files, holdout_files, train_config=train_config,
                                  name=f"joint_{kind}", init_from=embeddings.model_path if config.train.finetune_cnn else "",
                                  figures=module)
        trained[kind] = model = load_trained(settings)[layout.JOINT]
        checkpoints[kind] = last_checkpoint_path(settings)
        with pinned.report.timed(f"joint_{kind}_evaluation"):
            module["metrics"] = comparison[kind] = evaluate(model, holdout, seen, config.train.finetune_cnn)
    figures["comparison"] = table = {name: comparison_row(metrics) for name, metrics in comparison.items()}
    for kind in sorted(kinds, key=lambda k: auc_order(comparison[k])):
        details = {"interaction": kind, "finetune_cnn": config.train.finetune_cnn,
                   "embedding_model_version": embeddings.model_version, "comparison": table}
        register_model(pinned, data_version, comparison[kind], joint_model=trained[kind],
                       figures=modules[kind], details=details, name=kind, checkpoint=checkpoints[kind],
                       train_config=dataclasses.replace(config.train, interaction=kind))
    figures["best_module"] = max(kinds, key=lambda k: auc_order(comparison[k]))
    say_table(pinned.report.job, f"joint model on the held-out dates {', '.join(map(str, pinned.holdout_dates))} "
        f"(training_examples v{pinned.version}, sku_embeddings v{embeddings.version}):\n"
        f"{comparison_table(table)}")


def materialise(pinned: PinnedData, embeddings: EmbeddingInputs) -> dict[str, int]:
    """Writes the joint examples of the training and held-out dates; their new versions."""
    spark, config = pinned.spark, pinned.config
    features = config.features
    dates = sorted({*pinned.train_dates, *pinned.holdout_dates})  # an incremental run's: the new ones
    examples = pinned.examples.where(F.col("date").isin(dates))
    clicks = clicks_for_dates(pinned.examples, dates, features.behaviour_lookback_days)
    queries = query_vectors(examples.where(F.col("page") == layout.SEARCH), embeddings.model_path)
    behaviour = behaviour_embeddings(
        examples.where(F.col("page") == layout.FEED).select("impression_id", "user_id", "ts"),
        clicks, embeddings.frame, half_life_hours=features.behaviour_half_life_hours,
        max_clicks=features.behaviour_max_clicks, lookback_days=features.behaviour_lookback_days)
    images = None
    if config.train.finetune_cnn:
        images = delta.read_delta(spark, layout.table_path(config, layout.SKU_IMAGES)).select("sku_id", "image")
    frame = joint_examples(examples, embeddings.frame, queries, behaviour, config.train.embedding_dim,
                           images=images, blank_image=blank_png(features.image_size))
    versions = {}
    for name, dates in ((layout.JOINT_TRAIN, pinned.train_dates), (layout.JOINT_HOLDOUT, pinned.holdout_dates)):
        versions[name] = store.write_joint_examples(spark, layout.table_path(config, name),
                                                    frame.where(F.col("date").isin(dates)),
                                                    files=max(4, config.train.ranks))
    return versions


def evaluate(model: Any, holdout: DataFrame, seen: list[int], with_images: bool) -> dict[str, float | int]:
    """A joint model's held-out metrics."""
    import tensorflow as tf

    inputs = batches.joint_batches(holdout, with_images)
    return evaluate_ranking(lambda b: tf.sigmoid(model(_model_inputs(b), training=False)), inputs, seen)


def lr_baseline(pinned: PinnedData, holdout: DataFrame, seen: list[int]) -> dict[str, Any] | None:
    """The registered LR (``latest``) scored on the same held-out rows; None when there is none."""
    import tensorflow as tf

    try:
        version, path, metadata = latest_model(layout.registry_root(pinned.config), layout.LR)
    except FileNotFoundError:
        pinned.figures["lr_baseline"] = "no registered lr model: run `train --stage lr` first"
        return None
    score = tf.saved_model.load(path).signatures["lr_score"]
    metrics = evaluate_ranking(
        lambda b: score(sparse_ids=tf.constant(b["sparse_ids"]),
                        num_sparse_ids=tf.constant(b["num_sparse_ids"]))["probability"],
        batches.joint_batches(holdout), seen)
    pinned.figures["lr_baseline"] = {"model_version": version, "data_version": metadata.get("data_version")}
    return metrics


def oracle(pinned: PinnedData, seen: list[int]) -> dict[str, Any] | None:
    """The true click probability's metrics on the held-out rows (sample data only)."""
    holdout = pinned.examples.where(F.col("date").isin(pinned.holdout_dates))
    return oracle_metrics(pinned.spark, layout.oracle_path(pinned.config), holdout, seen)


def _model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """The numeric inputs of a batch (strings only as the query)."""
    return {k: v for k, v in batch.items() if k not in ("page_name", "is_cold_start_ad", "ad_sku_id", "label")}


def _seen_ad_skus(pinned: PinnedData) -> list[int]:
    trained = pinned.examples.where(F.col("date").isin(pinned.seen_dates))
    return [r.ad_sku_id for r in trained.select("ad_sku_id").distinct().collect()]


__all__ = ["MODULES", "evaluate", "lr_baseline", "materialise", "oracle", "train_joint"]

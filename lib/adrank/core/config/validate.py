"""Validation of a built :class:`Config`: ranges, choices, dates, and no credential in it.

Every check raises :class:`ConfigError` with a one-line message naming the key. A
``spark.conf`` key that holds a credential (:func:`is_credential_key`) is rejected, and so
is a ``tracking.uri`` with user-info (``http://<token>@host``).
"""

from __future__ import annotations

import datetime
import os
import re

from adrank.core.config.redact import is_credential_key
from adrank.core.config.schema import (
    Config,
    ConfigError,
    EmbedConfig,
    FeaturesConfig,
    RecommendConfig,
    SparkConfig,
    StorageConfig,
    TrackingConfig,
    TrainConfig,
)

MAX_BINARY_FILE_BYTES = 2**31 - 1  # Spark's binaryFile source reads no file longer than this
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MLFLOW_CREDENTIALS_HINT = ("pass the token in MLFLOW_TRACKING_TOKEN (or MLFLOW_TRACKING_USERNAME and "
                           "MLFLOW_TRACKING_PASSWORD; DATABRICKS_TOKEN for databricks), never in the config")


def validate(config: Config) -> None:
    sample = config.sample
    _require(sample.num_skus >= 10, "sample.num_skus", "must be at least 10")
    _require(
        sample.num_skus >= 2 * sample.num_categories, "sample.num_skus", "must be at least 2 x sample.num_categories"
    )
    _require(sample.num_users >= 1, "sample.num_users", "must be at least 1")
    _require(sample.num_impressions >= 100, "sample.num_impressions", "must be at least 100")
    _require(sample.num_days >= 2, "sample.num_days", "must be at least 2 (the last day is held out)")
    _require(2 <= sample.num_categories <= 36, "sample.num_categories", "must be in 2..36")
    _require(0 <= sample.cold_start_fraction < 0.5, "sample.cold_start_fraction", "must be in [0, 0.5)")
    _require(
        16 <= sample.image_min_size <= sample.image_max_size,
        "sample.image_min_size",
        "must be >= 16 and <= sample.image_max_size",
    )
    _require(sample.rows_per_partition >= 100, "sample.rows_per_partition", "must be at least 100")
    _check_date(sample.start_date, "sample.start_date")
    _validate_features(config.features)
    _validate_train(config.train)
    _validate_embed(config.embed)
    _validate_recommend(config.recommend)
    _validate_tracking(config.tracking)
    _require(bool(config.storage.root), "storage.root", "must not be empty")
    _validate_local_root(config.storage)
    _require(bool(config.inputs.root), "inputs.root", "must not be empty")
    _validate_spark(config.spark)


def _validate_spark(spark: SparkConfig) -> None:
    """No credential in ``spark.conf``; ``spark.hadoop_env`` values are environment variable names.

    Whether each named variable is set is checked where the secrets are read, when the
    SparkSession is built (:func:`adrank.runtime.spark.build_spark`): the config is validated on
    machines that do not hold them too (``spark-submit.sh`` before submitting, CI).
    """
    for name in spark.conf:
        _require(
            not is_credential_key(name),
            f"spark.conf.{name}",
            "looks like a credential: never put its value in the config; map the Hadoop "
            "property to the name of an environment variable in spark.hadoop_env",
        )
    for name, env_name in spark.hadoop_env.items():
        _require(  # the value is not echoed: what is not a variable name may be the secret itself
            ENV_NAME.fullmatch(env_name) is not None, f"spark.hadoop_env.{name}",
            "must be the NAME of an environment variable ([A-Za-z_][A-Za-z0-9_]*) that holds the value, "
            "never the value itself (not shown)",
        )


def _validate_features(features: FeaturesConfig) -> None:
    _require(16 <= features.image_size <= 512, "features.image_size", "must be in 16..512")
    _require(
        features.image_store_format in ("PNG", "JPEG"), "features.image_store_format", "must be PNG or JPEG"
    )
    _require(features.max_image_pixels >= 1_000_000, "features.max_image_pixels", "must be at least 1000000")
    _require(1024 <= features.max_image_bytes <= MAX_BINARY_FILE_BYTES, "features.max_image_bytes",
             f"must be in 1024..{MAX_BINARY_FILE_BYTES} (below 2 GiB: the most Spark reads of one file)")
    _require(8 <= features.hash_bits <= 30, "features.hash_bits", "must be in 8..30")
    _require(features.max_sparse_ids >= 1, "features.max_sparse_ids", "must be at least 1")
    _require(features.behaviour_half_life_hours > 0, "features.behaviour_half_life_hours", "must be above 0")
    for key in ("behaviour_max_clicks", "behaviour_lookback_days"):
        _require(getattr(features, key) >= 1, f"features.{key}", "must be at least 1")
    for i, cross in enumerate(features.crosses):
        _require(
            len([p for p in cross.split("*") if p]) >= 2,
            f"features.crosses[{i}]",
            f"must name two or more features joined by '*', got {cross!r}",
        )


def _validate_recommend(recommend: RecommendConfig) -> None:
    _require(recommend.candidates >= recommend.k, "recommend.candidates", "must be at least recommend.k")
    _require(recommend.popularity_weight >= 0, "recommend.popularity_weight", "must be at least 0")
    _require(0 <= recommend.whitening_power <= 1, "recommend.whitening_power", "must be in 0..1")
    _require(recommend.popular_candidates >= 0, "recommend.popular_candidates", "must be at least 0")
    for key in ("k", "ivf_nprobe", "recall_sample", "query_block", "catalog_block", "lookback_days",
                "ivf_max_iterations"):
        _require(getattr(recommend, key) >= 1, f"recommend.{key}", "must be at least 1")
    _require(recommend.exact_max_skus >= 0, "recommend.exact_max_skus", "must be at least 0")
    _require(recommend.ivf_lists >= 0, "recommend.ivf_lists", "must be at least 0 (0 = about sqrt(SKUs))")
    _require(recommend.ivf_train_per_list >= 4, "recommend.ivf_train_per_list", "must be at least 4")
    _require(bool(recommend.index_folder.strip("/")), "recommend.index_folder", "must not be empty")
    _require(recommend.mode in ("incremental", "full"), "recommend.mode", "must be incremental or full")


def _validate_train(train: TrainConfig) -> None:
    _require(1 <= train.ranks <= 64, "train.ranks", "must be in 1..64")
    _require(train.threads_per_rank >= 1, "train.threads_per_rank", "must be at least 1")
    _require(train.launcher in ("auto", "horovodrun", "spark"), "train.launcher", "must be auto, horovodrun or spark")
    _require(train.tower in ("mini_inception", "inception_v3"), "train.tower", "must be mini_inception or inception_v3")
    _require(
        train.gradient_mode in ("split", "sparse_as_dense", "horovod_default"),
        "train.gradient_mode",
        "must be split, sparse_as_dense or horovod_default",
    )
    _require(train.interaction in ("dot", "product", "dnn", "all"), "train.interaction",
             "must be dot, product, dnn or all")
    _require(train.joint_dense_learning_rate > 0, "train.joint_dense_learning_rate", "must be above 0")
    for key in ("pair_batch_size", "lr_batch_size", "pair_steps", "lr_steps", "checkpoint_every", "embedding_dim",
                "joint_steps", "joint_batch_size", "dnn_hidden"):
        _require(getattr(train, key) >= 1, f"train.{key}", "must be at least 1")
    _require(train.holdout_days >= 1, "train.holdout_days", "must be at least 1")
    _require(train.holdout_curve_rows >= 0, "train.holdout_curve_rows", "must be at least 0 (0 = no held-out curve)")
    _require(train.seed >= 0, "train.seed", "must be at least 0")
    _require(train.log_every >= 1, "train.log_every", "must be at least 1")
    _require(train.mode in ("incremental", "full"), "train.mode", "must be incremental or full")
    _require(train.window_days >= 0, "train.window_days", "must be at least 0 (0 = every training date)")
    _require(train.pairwise_every_days >= 0, "train.pairwise_every_days", "must be at least 0 (0 = every night)")
    _require(train.step_timeout_s >= 0, "train.step_timeout_s", "must be at least 0 (0 = no step watchdog)")


def _validate_local_root(storage: StorageConfig) -> None:
    if storage.local_root:
        _require(os.path.isabs(storage.local_root) and "://" not in storage.local_root, "storage.local_root",
                 f"must be an absolute local path (mounted on the driver and every executor), "
                 f"got {storage.local_root!r}")
        return
    _require(not _is_remote(storage.root), "storage.local_root",
             f"must be set when storage.root is {storage.root!r}: the model registry, checkpoints and "
             "serving snapshots need an absolute path mounted on the driver and every executor (e.g. NFS)")


def _is_remote(root: str) -> bool:
    """A URI other than ``file:`` (``s3a://``, ``abfss://``, ``hdfs://``...)."""
    return "://" in root and not root.startswith("file:")


def _validate_embed(embed: EmbedConfig) -> None:
    _require(1 <= embed.batch_size <= 65536, "embed.batch_size", "must be in 1..65536")
    _require(embed.partitions >= 0, "embed.partitions", "must be 0 (one per core) or more")
    _require(embed.serving_keep >= 1, "embed.serving_keep", "must be at least 1")
    _require(embed.compact_after_files_added >= 0, "embed.compact_after_files_added",
             "must be 0 (never compact) or more")
    for key, base in (("serving_folder", "storage.local_root"), ("staging_folder", "storage.root")):
        folder = getattr(embed, key)
        _require(bool(folder.strip("/")) and ".." not in folder.split("/") and "://" not in folder,
                 f"embed.{key}", f"must be a folder below {base}, got {folder!r}")


def _validate_tracking(tracking: TrackingConfig) -> None:
    uri = tracking.uri
    _require(not _has_user_info(uri), "tracking.uri",
             f"carries user-info (a token or user:password before '@'; not shown): {MLFLOW_CREDENTIALS_HINT}")
    _require(uri == uri.strip() and not any(c.isspace() for c in uri), "tracking.uri", "must not contain spaces")
    _require(not uri or uri == "databricks" or os.path.isabs(uri) or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri)
             is not None, "tracking.uri",
             f"must be empty (a local file store), 'databricks', an absolute path or a URI with a scheme, got {uri!r}")
    _require(bool(tracking.experiment.strip()), "tracking.experiment", "must not be empty")


def _has_user_info(uri: str) -> bool:
    """Whether the authority of ``uri`` (after ``scheme://``, or from the start without one, up to
    the first ``/``, ``?`` or ``#``) holds an ``@``: ``http://<token>@host``, ``<token>@host:5999``."""
    rest = uri.split("://", 1)[-1]
    return "@" in re.split(r"[/?#]", rest, maxsplit=1)[0]


def _check_date(text: str, key: str) -> None:
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"config key '{key}' must be an ISO date (YYYY-MM-DD), got {text!r}") from None


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' {message}")

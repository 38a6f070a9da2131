"""The configuration's schema: one frozen dataclass per section, and :class:`ConfigError`.

The field names, types and defaults here ARE the config keys (``train.ranks`` is
:attr:`TrainConfig.ranks`); :mod:`.yaml_values` reads YAML into them by their type hints,
:mod:`.validate` checks the ranges.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A configuration problem; its message names the offending key."""


@dataclass(frozen=True)
class SparkConfig:
    """How the SparkSession is built (the submitter's settings win on a cluster)."""

    master: str = "local[2]"
    app_name: str = "adrank"
    shuffle_partitions: int = 4
    driver_memory: str = "2g"
    conf: Mapping[str, str] = field(default_factory=dict)
    hadoop_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StorageConfig:
    """Where Delta tables live: ``<root>/<table>``; job reports under ``<root>/_runs``.

    ``local_root`` holds what is not a table and is read and written with plain file
    operations (atomic renames, ``flock``, TensorFlow's own I/O): the model registry,
    training checkpoints and serving snapshots. It must be an absolute path mounted at the
    same place on the driver and every executor (e.g. NFS). Empty: ``root``, which must
    then be local; an object-store ``root`` (``s3a://``...) requires it.
    """

    root: str
    local_root: str = ""

    @property
    def local(self) -> str:
        """The folder of the registry, checkpoints and serving snapshots (see the class doc)."""
        return self.local_root or self.root


@dataclass(frozen=True)
class InputsConfig:
    """Where raw inputs live (the layout of docs/design.md "Input contracts")."""

    root: str


@dataclass(frozen=True)
class SampleConfig:
    """Sizes and seed of the sample-data generator."""

    seed: int = 7
    num_skus: int = 5000
    num_users: int = 2000
    num_impressions: int = 200_000
    num_days: int = 7
    start_date: str = "2026-11-01"
    num_categories: int = 16
    cold_start_fraction: float = 0.03
    image_min_size: int = 64
    image_max_size: int = 128
    broken_per_kind: int = 3
    rows_per_partition: int = 50_000


@dataclass(frozen=True)
class FeaturesConfig:
    """How build_tables turns raw inputs into feature tables."""

    image_size: int = 64
    image_store_format: str = "PNG"
    max_image_pixels: int = 40_000_000
    max_image_bytes: int = 64 << 20  # larger image files are never read (Spark's binaryFile holds < 2 GiB)
    hash_bits: int = 20
    max_sparse_ids: int = 32
    crosses: tuple[str, ...] = ("page*ad_category", "device*hour")
    # The feed's context embedding (stage 3, recommend): the recency-weighted mean of the
    # embeddings of the user's clicks strictly before the impression (adrank.context.behaviour).
    behaviour_half_life_hours: float = 72.0
    behaviour_max_clicks: int = 20
    behaviour_lookback_days: int = 30


@dataclass(frozen=True)
class TrainConfig:
    """Horovod training: ranks, towers, batch sizes, steps, optimisers, checkpoints."""

    ranks: int = 2
    threads_per_rank: int = 1
    launcher: str = "auto"
    tower: str = "mini_inception"
    tower_width: int = 16
    embedding_dim: int = 32
    pair_batch_size: int = 64
    lr_batch_size: int = 1024
    pair_steps: int = 300
    lr_steps: int = 300
    dense_learning_rate: float = 0.001
    ftrl_learning_rate: float = 0.05
    gradient_mode: str = "split"
    # Stage 3 (joint): the LR plus an interaction of context and ad embeddings.
    interaction: str = "all"
    finetune_cnn: bool = False
    joint_steps: int = 300
    joint_batch_size: int = 1024
    joint_dense_learning_rate: float = 0.01
    dnn_hidden: int = 32
    checkpoint_every: int = 100
    holdout_days: int = 1
    # Held-out rows the ranks score at every checkpoint (the training curve's held-out
    # metric; read once, split over the ranks); 0 = no held-out curve.
    holdout_curve_rows: int = 1024
    registry_folder: str = "models"
    # On every rank: the seed (Python, numpy, TensorFlow), the loss log interval (steps),
    # the step watchdog (seconds, 0 = off), op determinism, and the TensorBoard folder
    # ("" = <checkpoint dir>/tensorboard).
    seed: int = 0
    log_every: int = 10
    step_timeout_s: float = 900.0
    deterministic: bool = False
    tensorboard_dir: str = ""
    # Warm starts (docs/training.md): ``incremental`` continues a stage's latest registered
    # version on the dates it has not seen; ``full`` trains from random weights on the newest
    # ``window_days`` training dates (0 = all). Stage 1 is retrained every
    # ``pairwise_every_days`` days of data (0 = every night), or when forced.
    mode: str = "incremental"
    window_days: int = 0
    pairwise_every_days: int = 7


@dataclass(frozen=True)
class EmbedConfig:
    """embed_catalog: the CNN's batch size, the Spark partitions it runs in, serving snapshots,
    and when ``sku_embeddings`` is compacted (OPTIMIZE once the runs since the last one added
    ``compact_after_files_added`` data files; 0 = never)."""

    batch_size: int = 256
    partitions: int = 0
    serving_folder: str = "serving/sku_embeddings"
    serving_keep: int = 3
    staging_folder: str = "_staging"
    compact_after_files_added: int = 64


@dataclass(frozen=True)
class RecommendConfig:
    """recommend: the top ``k`` SKUs by cosine similarity of embeddings, for SKUs, users and queries.

    Up to ``exact_max_skus`` SKUs the search is exact (every catalog block against every
    query block); above it, an inverted-file index (Spark ML ``KMeans`` into ``ivf_lists``
    clusters, 0 = about sqrt(SKUs), fitted on ``ivf_train_per_list`` SKUs per cluster;
    ``ivf_nprobe`` of them searched per query), with its recall@10 against exact search
    measured on ``recall_sample`` SKUs. ``query_block`` and ``catalog_block`` bound the score matrix one Python worker holds (memory per task).
    Users active and queries seen in the last ``lookback_days`` get recommendations: the
    best ``k`` of their ``candidates`` nearest SKUs and the ``popular_candidates`` most
    clicked ones, by cosine + ``popularity_weight`` x a popularity prior in [0, 1]
    (0 = the embedding's order alone). Similar SKUs are the nearest by cosine after a PCA
    whitening fitted on the catalog, each direction scaled by ``variance ** -power/2`` with
    ``whitening_power`` (0 = plain cosine). ``mode``: ``incremental`` recomputes only the
    lists the changed embeddings and new clicks can change while the embedding model is the
    previous run's; ``full`` recomputes every list (:mod:`adrank.recommend.incremental`).
    """

    k: int = 10
    candidates: int = 100
    popular_candidates: int = 100
    popularity_weight: float = 1.0
    whitening_power: float = 0.5
    exact_max_skus: int = 20_000
    ivf_lists: int = 0
    ivf_nprobe: int = 16
    ivf_train_per_list: int = 64
    ivf_max_iterations: int = 10
    recall_sample: int = 1000
    query_block: int = 512
    catalog_block: int = 8192
    lookback_days: int = 7
    index_folder: str = "_index/recommend"
    mode: str = "incremental"


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking of training (:mod:`adrank.runtime.tracking`): one MLflow run per (run id, stage).

    ``uri`` is the MLflow tracking URI (``http(s)://``, ``databricks``, ``sqlite:///``...); empty =
    the SQLite database ``sqlite:///<storage.local>/mlflow.db`` (a shared server on clusters).
    ``enabled: false`` logs nothing.
    Credentials never go here: MLflow reads them from its own environment variables
    (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN``, ``DATABRICKS_TOKEN``).
    """

    uri: str = ""
    enabled: bool = True
    experiment: str = "adrank"


@dataclass(frozen=True)
class Config:
    """The whole adrank configuration."""

    storage: StorageConfig
    inputs: InputsConfig
    spark: SparkConfig = field(default_factory=SparkConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

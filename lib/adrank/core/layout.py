"""Names and places: every table, source, stage and page name, and every path derived from config.

Pure (no Spark, no TensorFlow), so the driver, the Spark workers and the Horovod ranks can
all import it. A path is built here and nowhere else:

- Delta tables: ``<storage.root>/<table>``; run reports and logs: ``<storage.root>/_runs``; HTML
  reports: ``<storage.root>/_reports``;
  staging: ``<storage.root>/<embed.staging_folder>/<job>/<run id>``.
- Raw inputs: ``<inputs.root>/<source>``.
- Plain files (model registry, training checkpoints, serving snapshots, search indexes) live under
  ``storage.local`` (``storage.local_root``, else ``storage.root``), a path mounted at the
  same place on the driver and every executor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adrank.core.config import Config

# Delta tables (under storage.root)
SKU_IMAGES = "sku_images"
TRAINING_EXAMPLES = "training_examples"
QUARANTINE = "quarantine"
IMPRESSION_IDS = "impression_ids"  # build_tables' state: the kept impression ids by date (adrank.tables.state)
SKU_EMBEDDINGS = "sku_embeddings"
PAIRS_TRAIN = "stage1_pairs_train"
PAIRS_HOLDOUT = "stage1_pairs_holdout"
JOINT_TRAIN = "joint_examples_train"
JOINT_HOLDOUT = "joint_examples_holdout"
SIMILAR_SKUS = "similar_skus"
USER_RECOMMENDATIONS = "user_recommendations"
QUERY_RECOMMENDATIONS = "query_recommendations"
RECOMMENDATION_TABLES = (SIMILAR_SKUS, USER_RECOMMENDATIONS, QUERY_RECOMMENDATIONS)

# Raw input sources (under inputs.root)
CATALOG = "catalog"
CLICK_LOG = "click_log"
LR_FEATURES = "lr_features"
USER_SNAPSHOTS = "user_snapshots"
SKU_SNAPSHOTS = "sku_snapshots"
DATED_SOURCES = (CLICK_LOG, LR_FEATURES)
# Beside the inputs, written by the sample generator only: the planted click probability
# of every impression (the ceiling of stage 3's evaluation; never a pipeline input).
ORACLE_FOLDER = "_oracle"
ORACLE_TABLE = "click_probability"

# Training stages
PAIRWISE = "pairwise"
LR = "lr"
JOINT = "joint"

# Page kinds of an impression (the click log's ``page``)
DETAIL = "detail"
SEARCH = "search"
FEED = "feed"
PAGES = (DETAIL, FEED, SEARCH)

# Folders beside the tables and under storage.local
RUNS_FOLDER = "_runs"
REPORTS_FOLDER = "_reports"
CHECKPOINTS_FOLDER = "_checkpoints"


def join_path(root: str, *parts: str) -> str:
    """Join path parts onto a local path or a URI (``s3a://b/x`` + ``t`` -> ``s3a://b/x/t``)."""
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def table_path(config: Config, table: str) -> str:
    """Where a Delta table lives: ``<storage.root>/<table>``."""
    return join_path(config.storage.root, table)


def input_path(config: Config, source: str) -> str:
    """Where a raw source lives: ``<inputs.root>/<source>``."""
    return join_path(config.inputs.root, source)


def oracle_path(config: Config) -> str:
    """``<inputs.root>/_oracle/click_probability``: the sample's true click probabilities."""
    return join_path(config.inputs.root, ORACLE_FOLDER, ORACLE_TABLE)


def runs_path(config: Config, job: str, run_id: str) -> str:
    """The JSON report of one run: ``<storage.root>/_runs/<job>-<run id>.json``."""
    return join_path(config.storage.root, RUNS_FOLDER, f"{job}-{run_id}.json")


def log_path(config: Config, job: str, run_id: str) -> str:
    """The console log of one run (a local file): ``<storage.root>/_runs/<job>-<run id>.log``.

    Under ``<storage.local>/_runs`` when ``storage.root`` is a URI (``s3a://``...); a
    ``file:`` root is its path.
    """
    root = config.storage.root
    base = root if "://" not in root or root.startswith("file:") else config.storage.local
    if base.startswith("file:"):
        base = "/" + base.removeprefix("file:").lstrip("/")
    return join_path(base, RUNS_FOLDER, f"{job}-{run_id}.log")


def reports_path(config: Config, name: str) -> str:
    """An HTML report: ``<storage.root>/_reports/<name>.html`` (``name``: a run id or ``latest``)."""
    return join_path(config.storage.root, REPORTS_FOLDER, f"{name}.html")


def staging_root(config: Config, job: str) -> str:
    """Where a job stages its runs' intermediate files: ``<storage.root>/<embed.staging_folder>/<job>``."""
    return join_path(config.storage.root, config.embed.staging_folder, job)


def registry_root(config: Config) -> str:
    """The model registry: ``<storage.local>/<train.registry_folder>``."""
    return join_path(config.storage.local, config.train.registry_folder)


def checkpoint_root(config: Config) -> str:
    """Training checkpoints: ``<storage.local>/_checkpoints``."""
    return join_path(config.storage.local, CHECKPOINTS_FOLDER)


def serving_root(config: Config) -> str:
    """Serving snapshots: ``<storage.local>/<embed.serving_folder>``."""
    return join_path(config.storage.local, config.embed.serving_folder)


def index_root(config: Config) -> str:
    """Search indexes of ``recommend`` runs: ``<storage.local>/<recommend.index_folder>``."""
    return join_path(config.storage.local, config.recommend.index_folder)

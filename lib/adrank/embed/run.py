"""The ``embed_catalog`` run: keep ``sku_embeddings`` equal to the CNN over ``sku_images``.

One run (:func:`embed_catalog`) pins the registered stage-1 model and the latest
``sku_images`` version, chooses its mode from the last committed run's record
(:func:`choose_mode`: full, incremental over the Change Data Feed, or fallback), stages
the rows to upsert and delete once (the CNN runs once), MERGEs them in one commit that
carries the record, publishes (or patches) the serving snapshot, drops the staging folder
and compacts the table when due. User-facing behaviour: README "Catalog embeddings".

Contract: nothing but the MERGE commit changes the table or the record, and the two go
together, so a killed run either left both as they were (the rerun redoes the work) or
is complete (the rerun only publishes a lost snapshot): every SKU is embedded exactly
once, with its current image and the model named in the record. The driver never holds
the catalog.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, SparkSession

from adrank.core import layout
from adrank.core.config import Config, EmbedConfig
from adrank.embed import incremental, store
from adrank.embed.udf import SIGNATURE, with_embeddings
from adrank.runtime.runs import RunReport
from adrank.storage import delta

if TYPE_CHECKING:
    from adrank.embed.serving import ServingSnapshot

STAGE = "pairwise"
STALE_STAGING_S = 24 * 3600
ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"


class EmbedError(RuntimeError):
    """A problem the user must fix before embedding (one-line message)."""


@dataclass(frozen=True)
class Model:
    """The registered model version a run embeds with."""

    version: int
    path: str


@dataclass(frozen=True)
class Merge:
    """What a run's MERGE committed, and where its staged rows are until the serving export."""

    mode: str
    version: int
    read_version: int | None  # the table version the MERGE read (None: unknown)
    rows_inserted: int
    rows_deleted: int
    source_rows: int  # staged rows the MERGE read (0 for a record-only commit)
    staged_path: str
    files_added: int = 0  # data files the MERGE added


@dataclass(frozen=True)
class Plan:
    """The mode of a run and the ``sku_images`` versions it reads."""

    mode: str
    reason: str
    to_version: int
    previous_version: int | None = None  # source_version of the last committed run

    @property
    def from_version(self) -> int | None:
        """First Change Data Feed version read (incremental); None: the table at ``to_version``."""
        if self.mode != "incremental" or self.previous_version is None:
            return None
        return self.previous_version + 1

    @property
    def has_work(self) -> bool:
        """False for an incremental run with no new ``sku_images`` version."""
        return self.from_version is None or self.from_version <= self.to_version

    def figures(self) -> dict[str, Any]:
        """The mode, its reason and the versions read, for the report."""
        return {"mode": self.mode, "reason": self.reason, "sku_images": {
            "from_version": self.from_version, "to_version": self.to_version,
            "previous_source_version": self.previous_version}}

    def fallback(self, reason: str) -> Plan:
        """The same run as a full diff."""
        return Plan("fallback", reason, self.to_version, self.previous_version)


@dataclass(frozen=True)
class Places:
    """Where a run reads and writes: the tables, its staging folder, the snapshots and the registry."""

    images: str  # the sku_images table
    embeddings: str  # the sku_embeddings table
    staging: str  # the parent of the runs' staging folders
    serving: str  # the serving snapshots
    registry: str  # the model registry

    @staticmethod
    def of(config: Config) -> Places:
        """The places of ``config`` (:mod:`adrank.core.layout`)."""
        return Places(images=layout.table_path(config, layout.SKU_IMAGES),
                      embeddings=layout.table_path(config, layout.SKU_EMBEDDINGS),
                      staging=layout.staging_root(config, store.JOB), serving=layout.serving_root(config),
                      registry=layout.registry_root(config))


def registered_model(registry: str, image_size: int) -> Model:
    """The ``latest`` stage-1 model of ``registry``, checked against ``features.image_size``;
    EmbedError if unusable."""
    from adrank.train.registry import latest_model

    try:
        version, path, metadata = latest_model(registry, STAGE)
    except (FileNotFoundError, ValueError) as error:
        raise EmbedError(f"no registered {STAGE} model to embed with ({error}): "
                         "run `./spark-submit.sh train --stage pairwise` first") from None
    if SIGNATURE not in metadata.get("signatures", []):
        raise EmbedError(f"{STAGE} model v{version} at {path} has no '{SIGNATURE}' signature")
    if metadata.get("image_size") != image_size:
        raise EmbedError(f"{STAGE} model v{version} takes {metadata.get('image_size')}px images but "
                         f"features.image_size is {image_size}: retrain, or rebuild sku_images")
    return Model(version, path)


def choose_mode(previous: store.Processed | None, to_version: int, model_version: int, full: bool) -> Plan:
    """The mode of a run, from the last committed record (pure: no I/O)."""
    if previous is None:
        return Plan("full", "first run", to_version)
    last = previous.source_version
    if full:
        return Plan("full", "requested (--full)", to_version, last)
    if previous.model_version != model_version:
        return Plan("full", f"new model version {model_version} (was {previous.model_version})", to_version, last)
    if last > to_version:
        return Plan("fallback", f"sku_images is at version {to_version}, behind the processed version "
                    f"{last} (table recreated?)", to_version, last)
    return Plan("incremental", "change data feed", to_version, last)


@dataclass(frozen=True)
class Written:
    """What a run's MERGE changed in ``sku_embeddings`` (all 0 and no version when there was no work)."""

    skus_embedded: int = 0
    skus_deleted: int = 0
    rows_staged: int = 0
    sku_embeddings_version: int | None = None


@dataclass(frozen=True)
class EmbeddedCatalog:
    """What an ``embed_catalog`` run did: its plan and model, what it wrote, published and compacted."""

    model_version: int
    plan: Plan
    written: Written
    serving_snapshot: dict[str, Any]
    compaction: dict[str, int] | None
    skus_unchanged: int
    skus_total: int

    def as_json(self) -> dict[str, Any]:
        """The run record's ``embed_catalog``."""
        return {"embed_catalog": {
            "model_version": self.model_version, **self.plan.figures(), **dataclasses.asdict(self.written),
            "serving_snapshot": self.serving_snapshot, "compaction": self.compaction,
            "skus_unchanged": self.skus_unchanged, "skus_total": self.skus_total}}


def embed_catalog(
    spark: SparkSession, config: Config, report: RunReport, *, full: bool = False,
    before_commit: Callable[[], None] | None = None,
) -> EmbeddedCatalog:
    """Bring ``sku_embeddings`` up to date with ``sku_images`` and publish a serving snapshot.

    Args:
        spark: The session.
        config: The loaded config (``embed``, ``storage``, ``train.registry_folder``).
        report: The run report (its run id, the step timings).
        full: Re-embed every SKU whatever changed.
        before_commit: Test hook, called after the staged rows are written and before
            the MERGE (raise in it to simulate a crash).

    Returns:
        What the run did (the run record's ``embed_catalog``).

    Raises:
        EmbedError: No usable registered model, or no ``sku_images`` table.
    """
    places = Places.of(config)
    model = registered_model(places.registry, config.features.image_size)
    path = places.embeddings
    with report.timed("embed_plan"):
        plan, history = _plan(spark, places.images, path, model, full)
    written, merge = Written(), None
    if plan.has_work:
        plan, written, merge = _embed_and_merge(spark, config.embed, places, report, plan, model, before_commit)
    try:
        with report.timed("embed_serving"):
            snapshot = _publish_if_behind(spark, config.embed, places, model.version, merge, history)
    finally:
        if merge is not None:
            store.remove_folder(spark, merge.staged_path)
    with report.timed("embed_compaction"):
        compaction = _compact_if_due(spark, config.embed.compact_after_files_added, path, merge, history)
    total = snapshot["rows"]  # the snapshot is of the version this run left
    return EmbeddedCatalog(model.version, plan, written, snapshot, compaction,
                           skus_unchanged=total - written.skus_embedded, skus_total=total)


def _plan(spark: SparkSession, images_path: str, path: str, model: Model, full: bool) -> tuple[Plan, list[Any]]:
    """The run's plan, and the newest commits of ``sku_embeddings`` (read once, used again later)."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, images_path):
        raise EmbedError(f"no sku_images table at {images_path}: run `./spark-submit.sh build_tables` first")
    to_version = delta.pin_version(spark, images_path)
    store.ensure_table(spark, path)
    history = store.recent_history(spark, path)
    return choose_mode(store.last_processed(spark, path, history), to_version, model.version, full), history


def _embed_and_merge(
    spark: SparkSession, embed: EmbedConfig, places: Places, report: RunReport, plan: Plan, model: Model,
    before_commit: Callable[[], None] | None,
) -> tuple[Plan, Written, Merge]:
    """Stage the work once and MERGE it with the run's record (the caller drops the staging folder).

    Returns:
        The plan as run (incremental may have become fallback), the figures written and
        the MERGE's figures with the staging folder (the serving export reads it).
    """
    store.remove_stale_folders(spark, places.staging, STALE_STAGING_S)
    staged_path = layout.join_path(places.staging, report.run_id)
    with report.timed("embed_cnn"):
        plan = _stage(spark, embed, places, plan, model, staged_path)
    if before_commit is not None:
        before_commit()
    record = store.Processed(report.run_id, plan.to_version, model.version, plan.mode)
    path = places.embeddings
    with report.timed("embed_merge"):
        merged = store.merge_staged(spark, path, staged_path, record)
        if merged is None:  # nothing to change: record the versions all the same
            merged = store.record_without_rows(spark, path, record)
    embedded = merged.rows_inserted + merged.rows_updated  # = the staged upserts
    merge = Merge(plan.mode, merged.version, merged.read_version, merged.rows_inserted,
                  merged.rows_deleted, merged.source_rows, staged_path, merged.files_added)
    return plan, Written(embedded, merged.rows_deleted, merged.source_rows, merged.version), merge


def _stage(spark: SparkSession, embed: EmbedConfig, places: Places, plan: Plan, model: Model,
           staged_path: str) -> Plan:
    """Write the staged rows of ``plan``; an unreadable change feed restages them as a fallback.

    The change feed is read once, by the staging write itself: a range Delta cannot serve
    (not recorded, vacuumed, truncated log) fails that write, which is then redone as a
    full diff (``overwrite``: nothing of the failed attempt is kept).
    """
    try:
        with store.change_feed_errors() if plan.mode == "incremental" else nullcontext():
            _write_staged(spark, embed, places, plan, model, staged_path)
    except store.ChangeFeedUnavailable as error:
        plan = plan.fallback(f"change data feed unavailable: {error}")
        _write_staged(spark, embed, places, plan, model, staged_path)
    return plan


def _write_staged(spark: SparkSession, embed: EmbedConfig, places: Places, plan: Plan, model: Model,
                  staged_path: str) -> None:
    to_embed, deletions = _work(spark, embed.partitions, places, plan, model)
    embedded = with_embeddings(to_embed, model.path, embed.batch_size)
    staged = incremental.staged_rows(embedded, deletions, model.version)
    with delta.session_conf(spark, {ARROW_BATCH_CONF: str(embed.batch_size)}):
        store.write_staged(staged, staged_path)


def _work(spark: SparkSession, partitions: int, places: Places, plan: Plan,
          model: Model) -> tuple[DataFrame, DataFrame]:
    """``(images to embed, sku_ids to delete)`` of ``plan`` in ``partitions`` (``embed.partitions``;
    0 = one per core) partitions (lazy: nothing is read yet)."""
    images_path = places.images
    embedded = delta.read_delta(spark, places.embeddings)
    parts = partitions or spark.sparkContext.defaultParallelism
    if plan.from_version is not None:  # incremental
        latest = incremental.latest_changes(
            store.read_changes(spark, images_path, plan.from_version, plan.to_version))
        to_embed = incremental.changed_images(latest, embedded, model.version)
        return to_embed.repartition(parts, "sku_id"), incremental.deleted_skus(latest)
    images = delta.read_delta(spark, images_path, plan.to_version)
    deletions = incremental.vanished_skus(images, embedded)
    if plan.mode == "fallback":
        return incremental.unembedded_images(images, embedded, model.version).repartition(parts, "sku_id"), deletions
    to_embed = images.select(*incremental.IMAGE_COLUMNS)
    if to_embed.rdd.getNumPartitions() < parts:
        to_embed = to_embed.repartition(parts, "sku_id")
    return to_embed, deletions


def _publish_if_behind(spark: SparkSession, embed: EmbedConfig, places: Places, model_version: int,
                       merge: Merge | None, history: list[Any]) -> dict[str, Any]:
    """Publish the version this run wrote (else the table's latest) unless ``CURRENT`` serves it.

    Patches ``CURRENT`` with this run's staged rows when :func:`can_patch` says so; exports
    the whole table otherwise, or when the patch is refused (``patch_error`` says why).
    """
    from adrank.embed.export import publish_serving_snapshot
    from adrank.embed.serving import load_serving_snapshot

    path = places.embeddings
    version = merge.version if merge is not None else delta.latest_version(spark, path)
    root = places.serving
    try:
        current = load_serving_snapshot(root)
    except FileNotFoundError:
        current = None
    if current is not None and current.manifest.get("table_version") == version:
        return {"snapshot_version": current.version, "path": current.path, "rows": len(current),
                "dim": current.dim, "published": False, "patched_from": None}
    refused = {}
    manifest = None if current is None else current.manifest
    if (current is not None and merge is not None
            and can_patch(manifest, version, model_version, merge, _same_data_from(manifest, merge, history))):
        try:
            return {**_patch(spark, root, embed.serving_keep, current, version, model_version, merge),
                    "published": True}
        except (ValueError, FileNotFoundError) as error:
            refused = {"patch_error": str(error)}
    published = publish_serving_snapshot(
        spark, delta.read_delta(spark, path, version), root, table_version=version,
        model_version=model_version, keep=embed.serving_keep)
    return {**published, "published": True, "patched_from": None, **refused}


def _same_data_from(manifest: dict[str, Any] | None, merge: Merge | None, history: list[Any]) -> int | None:
    """For a snapshot older than the version the MERGE read: the oldest version with its rows."""
    if manifest is None or merge is None or merge.read_version is None:
        return None
    if not isinstance(manifest.get("table_version"), int) or manifest["table_version"] >= merge.read_version:
        return None
    return store.same_data_since(history, merge.read_version)


def _compact_if_due(spark: SparkSession, limit: int, path: str, merge: Merge | None,
                    history: list[Any]) -> dict[str, int] | None:
    """OPTIMIZE ``sku_embeddings`` once the MERGEs since the last OPTIMIZE added at least
    ``limit`` (``embed.compact_after_files_added``; 0 = never) data files (or no OPTIMIZE is in a
    full page of history).

    Each incremental MERGE adds a few small files and deletion vectors; compaction keeps
    the next runs' scans (and a full export) from slowing down. The count comes from the
    commit history the run read anyway (no table listing). It runs after the snapshot is
    published and changes no row, so the next run still patches that snapshot
    (:func:`adrank.embed.store.same_data_since`).
    """
    if limit == 0 or merge is None or merge.files_added == 0:
        return None
    earlier = store.files_added_since_compaction(history)
    if earlier is not None and earlier + merge.files_added < limit:
        return None
    return store.compact(spark, path)


def can_patch(manifest: dict[str, Any] | None, table_version: int, model_version: int,
              merge: Merge | None, same_data_from: int | None = None) -> bool:
    """Whether the snapshot of ``manifest`` plus this run's staged rows is ``table_version``.

    True when this run MERGEd (not in full mode: that rewrites every row anyway), its
    commit is ``table_version`` (the version to publish), it read the version just before
    it (no other commit came in between) and the snapshot holds the rows of that version,
    with the same model: it is of that version, or of one from ``same_data_from`` on
    (only compaction or property commits came after it). Pure: no I/O.
    """
    if merge is None or manifest is None or merge.read_version is None:
        return False
    oldest = merge.read_version if same_data_from is None else same_data_from
    return (merge.mode != "full" and merge.version == table_version and merge.read_version == merge.version - 1
            and oldest <= manifest.get("table_version", -1) <= merge.read_version
            and manifest.get("model_version") == model_version)


def _patch(spark: SparkSession, serving: str, keep: int, current: ServingSnapshot, version: int,
           model_version: int, merge: Merge) -> dict[str, Any]:
    """``current`` patched with the staged rows as the next snapshot under ``serving``, keeping
    ``keep`` snapshots (ValueError if they disagree)."""
    from adrank.embed.export import patch_serving_snapshot

    return patch_serving_snapshot(
        spark, store.read_staged(spark, merge.staged_path), serving,
        base_version=current.version, table_version=version, model_version=model_version,
        expected_rows=len(current) + merge.rows_inserted - merge.rows_deleted,
        keep=keep, change_rows=merge.source_rows)

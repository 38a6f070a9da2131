"""Delta I/O of the tables build_tables owns; ``sku_images`` (MERGE of the changes only) and its images as arrays.

``training_examples`` and ``quarantine`` are written by replacing the dates of a run
(``replaceWhere``, :func:`adrank.storage.delta.write_delta`); ``sku_images`` is one row per SKU,
kept current by a MERGE that touches the changed SKUs only (:func:`upsert_sku_images`).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from adrank.core.errors import naming_table
from adrank.storage.delta import (
    MERGE_METRICS,
    USER_METADATA_CONF,
    commit_figures,
    commit_with_metadata,
    create_table,
    latest_version,
    read_delta,
    session_conf,
    set_properties,
    table_properties,
)

SKU_IMAGES_PROPERTIES = {"delta.enableChangeDataFeed": "true", "delta.enableDeletionVectors": "false"}
PREPROCESSING_PROPERTY = "adrank.images.preprocessing"  # what made the stored images
UNCHANGED_RUN_PROPERTY = "adrank.sku_images.unchangedRun"  # the last run that found nothing to change
SKU_IMAGES_COMPARED = ("image_hash", "title", "category_id", "image_format", "height", "width")
SKU_IMAGES_CHANGED = " OR ".join(f"NOT (t.{c} <=> s.{c})" for c in SKU_IMAGES_COMPARED)
_OP = "_op"  # of a change row: upsert or delete
SKU_IMAGES_FIGURES = {key: name for key, name in MERGE_METRICS.items() if name.startswith("rows_")}


def stored_image_keys(spark: SparkSession, path: str, preprocessing: str) -> DataFrame | None:
    """``sku_id``, ``image_hash`` of ``sku_images`` if its images were stored by ``preprocessing``.

    None when the table does not exist or records another preprocessing (table property
    :data:`PREPROCESSING_PROPERTY`): then every image must be decoded again.
    """
    properties = table_properties(spark, path)
    if properties is None or properties.get(PREPROCESSING_PROPERTY) != preprocessing:
        return None
    return read_delta(spark, path).select("sku_id", "image_hash")


def upsert_sku_images(
    spark: SparkSession,
    good_df: DataFrame,
    path: str,
    commit_info: Mapping[str, Any] | None,
    full_snapshot: bool = True,
    preprocessing: str | None = None,
) -> dict[str, int | bool]:
    """MERGE the good ``sku_images`` rows into the table, rewriting only changed rows.

    The first run creates the table (Change Data Feed on, deletion vectors off). Only the
    changes are MERGEd (:func:`_sku_image_changes`): SKUs that are new, whose
    ``image_hash``, ``title``, ``category_id`` or stored format/size changed, or (full
    snapshot) that are gone. A MERGE rewrites every file holding a row it matches (with
    deletion vectors off a file is rewritten whole, its other rows copied), so unchanged
    SKUs are not offered to it: their files stay as they are and they leave no trace in
    the Change Data Feed. A row with a null ``image`` (its image was not decoded again: the
    same bytes are stored) keeps the stored image; it is never inserted (the caller's row
    count then shows it).

    When nothing changed, Delta makes no MERGE commit; the run is then recorded (its
    ``commit_info`` as ``userMetadata``) in a commit that only sets the table property
    :data:`UNCHANGED_RUN_PROPERTY` (and the preprocessing, if asked): no data file is added
    or removed, and the Change Data Feed of that version is empty.

    Args:
        spark: The session.
        good_df: ``sku_images`` rows, one per ``sku_id`` (``split_images``' good output).
        path: Table location.
        commit_info: JSON-able facts stored as the commits' ``userMetadata``.
        full_snapshot: ``good_df`` is the whole catalog: delete SKUs absent from it.
            Pass False for partial (incremental) catalog drops.
        preprocessing: What made the images (``preprocessing_fingerprint``), recorded as a
            table property once the MERGE is committed. Pass it only when the table does
            not record it yet (:func:`stored_image_keys` gave None); None leaves the
            property alone.

    Returns:
        ``version`` of the run's commit (the MERGE, or the property commit when nothing
        changed), ``rows_inserted``, ``rows_updated``, ``rows_deleted``, ``rows_copied``
        (unchanged rows rewritten with a file the MERGE rewrote; from its operationMetrics)
        and ``created``.
    """
    metadata = json.dumps(dict(commit_info or {}), sort_keys=True)
    properties = {} if preprocessing is None else {PREPROCESSING_PROPERTY: preprocessing}
    with session_conf(spark, {USER_METADATA_CONF: metadata}):
        created = create_table(spark, path, good_df.schema, {**SKU_IMAGES_PROPERTIES, **({} if preprocessing is None else properties)})
        before = latest_version(spark, path)
        _merge_sku_images(spark, _sku_image_changes(spark, good_df, path, full_snapshot), path, good_df.columns)
        row = commit_with_metadata(spark, path, metadata, operation="MERGE")
        if row is None or row.version <= before:  # nothing changed: Delta made no commit; record the run
            set_properties(spark, path, {UNCHANGED_RUN_PROPERTY: str((commit_info or {}).get("run_id", "")),
                                          **({} if created else properties)})
            properties = {}
            row = commit_with_metadata(spark, path, metadata, operation="SET TBLPROPERTIES")
    if row is None:
        raise RuntimeError(f"no commit with this run's metadata in the history of {path}")
    if properties and not created:
        set_properties(spark, path, properties)
    return {**commit_figures(row, SKU_IMAGES_FIGURES), "created": created}


def _sku_image_changes(spark: SparkSession, good_df: DataFrame, path: str, full_snapshot: bool) -> DataFrame:
    """The rows the MERGE must touch: ``good_df``'s new and changed SKUs (``_op`` upsert) and,
    for a full snapshot, the stored SKUs gone from it (``_op`` delete; other columns null).

    Compared with the stored keys and compared columns only (never the image bytes).
    """
    stored = read_delta(spark, path).select("sku_id", *SKU_IMAGES_COMPARED)
    offered = good_df.alias("s").join(stored.alias("t"), F.col("s.sku_id") == F.col("t.sku_id"), "left")
    upserts = offered.where(F.col("t.sku_id").isNull() | F.expr(SKU_IMAGES_CHANGED)).select("s.*")
    changes = upserts.withColumn(_OP, F.lit("upsert"))
    if full_snapshot:
        gone = stored.select("sku_id").join(good_df.select("sku_id"), "sku_id", "left_anti")
        changes = changes.unionByName(gone.withColumn(_OP, F.lit("delete")), allowMissingColumns=True)
    return changes


def _merge_sku_images(spark: SparkSession, changes: DataFrame, path: str, columns: Sequence[str]) -> None:
    """One MERGE by ``sku_id`` of the change rows: delete, update or insert."""
    from delta.tables import DeltaTable

    values: dict[str, str | Column] = {c: f"s.{c}" for c in columns}
    merge = (DeltaTable.forPath(spark, path).alias("t")
             .merge(changes.alias("s"), "t.sku_id = s.sku_id")
             .whenMatchedDelete(condition=f"s.{_OP} = 'delete'")
             .whenMatchedUpdate(condition=f"s.{_OP} = 'upsert' AND ({SKU_IMAGES_CHANGED})",
                                set={**values, "image": "coalesce(s.image, t.image)"})
             .whenNotMatchedInsert(condition=f"s.{_OP} = 'upsert' AND s.image IS NOT NULL", values=values))
    with naming_table(path):
        merge.execute()


def decode_stored_images(images: Iterable[bytes]) -> np.ndarray:
    """Stored ``sku_images.image`` values (PNG or JPEG of one size, RGB) -> uint8 ``[B, S, S, 3]``.

    What every reader of the table (the embedding UDF, training's evaluation) feeds a model.
    """
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(data)).convert("RGB")) for data in images])

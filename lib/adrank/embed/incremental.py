"""What an embed_catalog run must do: pure DataFrame transforms from sku_images to staged rows.

Three ways to find the work, one shape of result. A run stages rows of
:data:`STAGED_DDL`: ``op = "upsert"`` rows carry a new embedding, ``op = "delete"`` rows
only a ``sku_id``; the MERGE (``adrank.embed.store``) applies them by ``sku_id``.

* **incremental** (:func:`latest_changes` -> :func:`changed_images`, :func:`deleted_skus`):
  from the Change Data Feed of ``sku_images`` over the unprocessed versions, the last
  change of each SKU (by ``_commit_version``; update pre-images ignored). A SKU whose last
  change is a delete is deleted; any other is re-embedded unless its ``image_hash`` is the
  one already embedded (a change of title or category only).
* **full** (``--full``, the first run, a new model version): every row of ``sku_images``
  at the pinned version is embedded; embedded SKUs gone from it are deleted
  (:func:`vanished_skus`).
* **fallback** (the Change Data Feed of the range is unreadable, e.g. vacuumed): the diff
  of ``sku_images`` at the pinned version against ``sku_embeddings`` by
  ``(sku_id, image_hash, model_version)`` (:func:`unembedded_images`), plus
  :func:`vanished_skus`.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

SKU_EMBEDDINGS_DDL = (
    "sku_id long, image_hash string, model_version int, embedding array<float>, updated_at timestamp"
)
SKU_EMBEDDINGS_COLUMNS = tuple(part.split()[0] for part in SKU_EMBEDDINGS_DDL.split(", "))
STAGED_DDL = SKU_EMBEDDINGS_DDL + ", op string"
UPSERT = "upsert"
DELETE = "delete"
MODES = ("full", "incremental", "fallback")
IMAGE_COLUMNS = ("sku_id", "image_hash", "image")


def latest_changes(changes: DataFrame) -> DataFrame:
    """The last change of each SKU in a Change Data Feed range.

    Args:
        changes: ``readChangeFeed`` rows of ``sku_images`` (``_change_type``,
            ``_commit_version`` and the table's columns).

    Returns:
        ``sku_id``, ``image_hash``, ``image`` and ``deleted`` (the last change is a delete),
        one row per changed SKU. Update pre-images never win: they describe the old row.
        Within one commit an insert wins over a delete of the same SKU (an overwrite
        deletes every old row and inserts the new ones in one version).
    """
    deleted = F.col("_change_type") == "delete"
    last_first = Window.partitionBy("sku_id").orderBy(F.col("_commit_version").desc(), deleted.asc())
    return (changes.where(F.col("_change_type") != "update_preimage")
            .withColumn("_rank", F.row_number().over(last_first))
            .where(F.col("_rank") == 1)
            .select(*IMAGE_COLUMNS, deleted.alias("deleted")))


def changed_images(latest: DataFrame, embedded: DataFrame, model_version: int) -> DataFrame:
    """Changed SKUs whose image is not the one embedded: ``sku_id``, ``image_hash``, ``image``.

    Args:
        latest: :func:`latest_changes`.
        embedded: ``sku_embeddings`` rows (``sku_id``, ``image_hash``, ``model_version``).
        model_version: The model of this run.
    """
    return unembedded_images(latest.where(~F.col("deleted")), embedded, model_version)


def deleted_skus(latest: DataFrame) -> DataFrame:
    """``sku_id`` of the SKUs whose last change is a delete."""
    return latest.where(F.col("deleted")).select("sku_id")


def unembedded_images(images: DataFrame, embedded: DataFrame, model_version: int) -> DataFrame:
    """Rows of ``images`` not embedded with this image and model: the full diff of a fallback."""
    current = embedded.where(F.col("model_version") == model_version).select("sku_id", "image_hash")
    return images.select(*IMAGE_COLUMNS).join(current, ["sku_id", "image_hash"], "left_anti")


def vanished_skus(images: DataFrame, embedded: DataFrame) -> DataFrame:
    """``sku_id`` of embedded SKUs that are no longer in ``images``."""
    return embedded.select("sku_id").join(images.select("sku_id"), "sku_id", "left_anti")


def staged_rows(embedded_images: DataFrame, deletions: DataFrame, model_version: int) -> DataFrame:
    """Upsert rows (embedded now) and delete rows in one frame of :data:`STAGED_DDL`.

    Args:
        embedded_images: ``sku_id``, ``image_hash``, ``embedding`` of the SKUs to upsert.
        deletions: ``sku_id`` of the SKUs to delete.
        model_version: The registry version that made the embeddings.

    Returns:
        Rows stamped with one ``updated_at`` per query (``current_timestamp``).
    """
    upserts = embedded_images.select(
        "sku_id", "image_hash", F.lit(model_version).cast("int").alias("model_version"),
        F.col("embedding").cast("array<float>").alias("embedding"),
        F.current_timestamp().alias("updated_at"), F.lit(UPSERT).alias("op"))
    deletes = deletions.select(
        "sku_id", F.lit(None).cast("string").alias("image_hash"), F.lit(None).cast("int").alias("model_version"),
        F.lit(None).cast("array<float>").alias("embedding"), F.lit(None).cast("timestamp").alias("updated_at"),
        F.lit(DELETE).alias("op"))
    return upserts.unionByName(deletes)

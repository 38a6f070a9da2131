"""Stage 3's inputs as fixed-width columns: the context embedding x and the ad embedding y per row.

Contract: :func:`joint_examples` is a pure transform of pinned frames into the rows of
:data:`JOINT_COLUMNS`, which the ranks read with Petastorm (no help needed: arrays of a
fixed width D, floats, ints). Per page, x is

* ``detail``: the context SKU's embedding (``sku_embeddings``);
* ``search``: the query's embedding from the registered stage-1 query tower
  (:func:`adrank.context.towers.query_vectors`, a ``mapInPandas`` over the distinct queries);
* ``feed``: the user's behaviour embedding (:func:`adrank.context.behaviour.behaviour_embeddings`,
  clicks strictly before the impression),

and y is the ad SKU's embedding. A missing embedding is a zero vector with
``x_present`` / ``y_present`` = 0 (the model puts a learned vector in its place). With
``images`` (fine-tuning the towers) the rows also carry the stored ``ad_image`` and
``context_image`` bytes (a blank PNG where there is none) and the ``query``.
"""

from __future__ import annotations

import io

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

PAGE_INDEX = {page: i for i, page in enumerate(("detail", "feed", "search"))}  # = joint_model.PAGE_KINDS
JOINT_COLUMNS = (
    "impression_id", "date", "page_name", "page", "ad_sku_id", "is_cold_start_ad", "label",
    "sparse_ids", "num_sparse_ids", "x", "x_present", "y", "y_present",
)
IMAGE_COLUMNS = ("ad_image", "context_image", "query")


def joint_examples(examples: DataFrame, sku_vectors: DataFrame, query_embeddings: DataFrame,
                   behaviour: DataFrame, embedding_dim: int, images: DataFrame | None = None,
                   blank_image: bytes = b"") -> DataFrame:
    """The rows the joint model trains and is evaluated on, one per example.

    Args:
        examples: ``training_examples`` rows.
        sku_vectors: ``sku_id, embedding`` (pinned ``sku_embeddings``).
        query_embeddings: ``query, embedding`` (:func:`adrank.context.towers.query_vectors`).
        behaviour: ``impression_id, behaviour, behaviour_clicks``.
        embedding_dim: D.
        images: ``sku_id, image`` (pinned ``sku_images``) to add the image columns.
        blank_image: The stored bytes that stand in for a missing image.

    Returns:
        :data:`JOINT_COLUMNS` (plus :data:`IMAGE_COLUMNS` with ``images``).
    """
    context = sku_vectors.select(F.col("sku_id").alias("context_sku_id"), F.col("embedding").alias("context_vec"))
    ad = sku_vectors.select(F.col("sku_id").alias("ad_sku_id"), F.col("embedding").alias("ad_vec"))
    queries = query_embeddings.select("query", F.col("embedding").alias("query_vec"))
    joined = (examples.join(context, "context_sku_id", "left").join(ad, "ad_sku_id", "left")
              .join(queries, "query", "left").join(behaviour.select("impression_id", "behaviour"),
                                                    "impression_id", "left"))
    x = (F.when(F.col("page") == "detail", F.col("context_vec"))
         .when(F.col("page") == "search", F.col("query_vec"))
         .when(F.col("page") == "feed", F.col("behaviour")))
    frame = joined.select(
        *examples.columns, x.alias("x_raw"), F.col("ad_vec").alias("y_raw"))
    frame = frame.select(
        "*", F.col("page").alias("page_name"), _page_index(F.col("page")).alias("page_index"),
        F.col("x_raw").isNotNull().cast("float").alias("x_present"),
        _filled(F.col("x_raw"), embedding_dim).alias("x"),
        F.col("y_raw").isNotNull().cast("float").alias("y_present"),
        _filled(F.col("y_raw"), embedding_dim).alias("y"))
    frame = frame.drop("page").withColumnRenamed("page_index", "page")
    if images is None:
        return frame.select(*JOINT_COLUMNS)
    return _with_images(frame, images, blank_image).select(*JOINT_COLUMNS, *IMAGE_COLUMNS)


def _page_index(page: Column) -> Column:
    index = F.lit(None).cast("int")
    for name, value in PAGE_INDEX.items():
        index = F.when(page == name, F.lit(value)).otherwise(index)
    return index


def _filled(vector: Column, dim: int) -> Column:
    """The vector, or D zeros when null (a fixed width for every row)."""
    return F.coalesce(vector, F.array_repeat(F.lit(0.0).cast("float"), dim)).cast("array<float>")


def _with_images(frame: DataFrame, images: DataFrame, blank_image: bytes) -> DataFrame:
    """Adds ``ad_image``, ``context_image`` (blank where none) and ``query`` ("" where none)."""
    ad = images.select(F.col("sku_id").alias("ad_sku_id"), F.col("image").alias("ad_image"))
    context = images.select(F.col("sku_id").alias("context_sku_id"), F.col("image").alias("context_image"))
    blank = F.lit(bytearray(blank_image))
    return (frame.join(ad, "ad_sku_id", "left").join(context, "context_sku_id", "left")
            .withColumn("ad_image", F.coalesce("ad_image", blank))
            .withColumn("context_image", F.coalesce("context_image", blank))
            .withColumn("query", F.coalesce("query", F.lit(""))))


def blank_png(image_size: int) -> bytes:
    """A mid-grey square PNG: what a row without an image carries."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (image_size, image_size), (127, 127, 127)).save(buffer, "PNG")
    return buffer.getvalue()


__all__ = ["IMAGE_COLUMNS", "JOINT_COLUMNS", "PAGE_INDEX", "blank_png", "joint_examples"]

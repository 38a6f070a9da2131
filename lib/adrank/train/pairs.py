"""Stage-1 training pairs: (context, clicked ad, unclicked ad) from ``training_examples``.

The pairwise CNN of stage 1 learns from triplets whose context is a detail page's main
SKU (an image) or a search query (text):

* :func:`detail_triplets`: every clicked detail-page impression gives one triplet
  ``(context_sku_id, pos_sku_id = ad_sku_id, neg_sku_id)``;
* :func:`search_pairs`: every clicked search impression gives ``(query, pos_sku_id,
  neg_sku_id)``.

Negative sampling (deterministic: the same inputs give the same pairs on every run):

1. **shown**: the negative is an ad shown with the same context (the same
   ``context_sku_id``, or the same exact ``query`` text) that was never clicked with that
   context. The context's candidates are numbered in the order of a salted ``xxhash64``
   of their SKU id, and the positive impression takes candidate number
   ``xxhash64(impression_id) mod (number of candidates)``: one negative per positive, a
   different one for different impressions, no cross join.
2. **catalog** (fallback, when the context has no such candidate): a catalog SKU (a row
   of ``sku_images``) whose ``category_id`` differs from the positive's
   ``ad_category_id`` (a null category counts as its own category, -1), picked the same
   way among all such SKUs. It may (rarely) have been clicked with the same context.

Which rule chose the negative is in the ``negative_source`` column (``"shown"`` or
``"catalog"``) of :func:`stage1_pairs`; it is dropped by :func:`with_images`. A positive
that gets no negative at all (the catalog has a single category) keeps a null
``neg_sku_id`` and is dropped, and counted, by :func:`with_images` with the rows whose
SKUs have no stored image: they cannot be trained.

:func:`with_images` returns rows of :data:`PAIRS_DDL`, one schema for both kinds (no
nulls, fixed-width scalars and byte strings only: what Petastorm reads without help)::

    kind            string   "detail" | "search"
    query           string   "" for detail
    context_image   binary   the context SKU's stored image; b"" for search
    pos_image       binary   the clicked ad's stored image
    neg_image       binary   the negative's stored image
    context_sku_id  long     -1 for search
    pos_sku_id      long
    neg_sku_id      long
    date            date     the positive impression's date

Negatives are chosen from the whole input, not only from impressions before the
positive's date; the pairs train an image embedding, not the time-split LR.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

DETAIL = "detail"
SEARCH = "search"
KINDS = (DETAIL, SEARCH)
SHOWN = "shown"
CATALOG = "catalog"
NO_CONTEXT_SKU = -1
NO_CATEGORY = -1
HASH_SALT = "adrank.pairs"
PAIRS_DDL = (
    "kind string, query string, context_image binary, pos_image binary, neg_image binary, "
    "context_sku_id long, pos_sku_id long, neg_sku_id long, date date"
)
PAIRS_COLUMNS = tuple(part.split()[0] for part in PAIRS_DDL.split(", "))
PAIR_KEYS_COLUMNS = (
    "kind", "query", "context_sku_id", "pos_sku_id", "neg_sku_id", "date", "negative_source",
)


def stage1_pairs(examples: DataFrame, sku_images: DataFrame) -> DataFrame:
    """Detail triplets and search pairs in one frame (ids only, no image bytes yet).

    Args:
        examples: ``training_examples`` rows (``EXAMPLES_DDL``).
        sku_images: The ``sku_images`` table (``sku_id``, ``category_id`` are used).

    Returns:
        Columns :data:`PAIR_KEYS_COLUMNS`: one row per clicked detail or search
        impression; ``query`` is "" for detail rows, ``context_sku_id`` -1 for search rows.
    """
    detail = detail_triplets(examples, sku_images).select(
        F.lit(DETAIL).alias("kind"), F.lit("").alias("query"), "context_sku_id",
        "pos_sku_id", "neg_sku_id", "date", "negative_source")
    search = search_pairs(examples, sku_images).select(
        F.lit(SEARCH).alias("kind"), "query", F.lit(NO_CONTEXT_SKU).cast("long").alias("context_sku_id"),
        "pos_sku_id", "neg_sku_id", "date", "negative_source")
    return detail.unionByName(search)


def detail_triplets(examples: DataFrame, sku_images: DataFrame) -> DataFrame:
    """One triplet per clicked detail-page impression (see the module docstring).

    Returns:
        ``context_sku_id``, ``pos_sku_id``, ``neg_sku_id`` (null if no negative exists),
        ``date``, ``negative_source`` (``"shown"``, ``"catalog"`` or null).
    """
    detail = examples.where((F.col("page") == DETAIL) & F.col("context_sku_id").isNotNull())
    return pairs_with_negatives(detail, "context_sku_id", sku_images)


def search_pairs(examples: DataFrame, sku_images: DataFrame) -> DataFrame:
    """One pair per clicked search impression with a non-empty query text.

    Returns:
        ``query``, ``pos_sku_id``, ``neg_sku_id`` (null if no negative exists), ``date``,
        ``negative_source``.
    """
    search = examples.where((F.col("page") == SEARCH) & (F.coalesce(F.col("query"), F.lit("")) != ""))
    return pairs_with_negatives(search, "query", sku_images)


def pairs_with_negatives(impressions: DataFrame, context: str, sku_images: DataFrame) -> DataFrame:
    """Every clicked impression of ``impressions`` with one negative, shown or from the catalog.

    Args:
        impressions: Examples of one page kind (``impression_id``, ``date``, ``label``,
            ``ad_sku_id``, ``ad_category_id`` and the ``context`` column).
        context: The column that defines "the same context".
        sku_images: The catalog (``sku_id``, ``category_id``).

    Returns:
        ``context``, ``pos_sku_id``, ``neg_sku_id``, ``date``, ``negative_source``.
    """
    positives = clicked_impressions(impressions, context)
    shown = pick_shown_negative(positives, shown_unclicked(impressions, context), context)
    both = pick_catalog_negative(shown, sku_images)
    source = (F.when(F.col("shown_neg").isNotNull(), F.lit(SHOWN))
              .when(F.col("catalog_neg").isNotNull(), F.lit(CATALOG)))
    return both.select(context, "pos_sku_id", F.coalesce("shown_neg", "catalog_neg").alias("neg_sku_id"),
                       "date", source.alias("negative_source"))


def clicked_impressions(impressions: DataFrame, context: str) -> DataFrame:
    """Clicked impressions: ``impression_id``, context, ``pos_sku_id``, ``pos_category``, ``date``."""
    return impressions.where(F.col("label") == 1).select(
        "impression_id", context, F.col("ad_sku_id").alias("pos_sku_id"),
        F.coalesce(F.col("ad_category_id"), F.lit(NO_CATEGORY)).alias("pos_category"), "date")


def shown_unclicked(impressions: DataFrame, context: str) -> DataFrame:
    """Ads shown with a context and never clicked with it, numbered per context.

    Returns:
        context, ``neg_sku_id``, ``candidate`` (0-based, in salted-hash order) and
        ``num_candidates`` (of the context).
    """
    never_clicked = (impressions.groupBy(context, "ad_sku_id").agg(F.max("label").alias("ever_clicked"))
                     .where(F.col("ever_clicked") == 0))
    by_context = Window.partitionBy(context)
    return never_clicked.select(
        context, F.col("ad_sku_id").alias("neg_sku_id"),
        (F.row_number().over(by_context.orderBy(salted_hash(F.col("ad_sku_id")), "ad_sku_id")) - 1)
        .alias("candidate"),
        F.count(F.lit(1)).over(by_context).alias("num_candidates"))


def pick_shown_negative(positives: DataFrame, candidates: DataFrame, context: str) -> DataFrame:
    """Adds ``shown_neg``: the context's candidate number ``hash(impression_id) mod n``.

    Positives whose context has no candidate get a null ``shown_neg``.
    """
    counts = candidates.select(context, "num_candidates").distinct()
    picked = positives.join(counts, context, "left").withColumn(
        "candidate", F.pmod(salted_hash(F.col("impression_id")), F.col("num_candidates")))
    chosen = candidates.select(context, "candidate", F.col("neg_sku_id").alias("shown_neg"))
    return picked.join(chosen, [context, "candidate"], "left").drop("candidate", "num_candidates")


def pick_catalog_negative(positives: DataFrame, sku_images: DataFrame) -> DataFrame:
    """Adds ``catalog_neg``: a catalog SKU of another category than ``pos_category``.

    Null when the catalog has no SKU of another category.
    """
    others = other_category_skus(sku_images)
    counts = others.groupBy("pos_category").agg(F.count(F.lit(1)).alias("num_others"))
    picked = positives.join(counts, "pos_category", "left").withColumn(
        "other", F.pmod(salted_hash(F.col("impression_id"), CATALOG), F.col("num_others")))
    chosen = others.select("pos_category", "other", F.col("neg_sku_id").alias("catalog_neg"))
    return picked.join(chosen, ["pos_category", "other"], "left").drop("other", "num_others")


def other_category_skus(sku_images: DataFrame) -> DataFrame:
    """For each category c: the catalog SKUs not in c, numbered in salted-hash order.

    Returns:
        ``pos_category`` (c), ``neg_sku_id``, ``other`` (0-based number within c).
    """
    catalog = sku_images.select(
        F.col("sku_id").alias("neg_sku_id"),
        F.coalesce(F.col("category_id"), F.lit(NO_CATEGORY)).alias("neg_category"))
    categories = catalog.select(F.col("neg_category").alias("pos_category")).distinct()
    pairs = categories.crossJoin(catalog).where(F.col("pos_category") != F.col("neg_category"))
    order = Window.partitionBy("pos_category").orderBy(salted_hash(F.col("neg_sku_id")), "neg_sku_id")
    return pairs.select("pos_category", "neg_sku_id", (F.row_number().over(order) - 1).alias("other"))


def salted_hash(column: Column, salt: str = HASH_SALT) -> Column:
    """A deterministic 64-bit hash of ``column`` and ``salt`` (Spark's ``xxhash64``)."""
    return F.xxhash64(column, F.lit(salt))


def with_images(pairs: DataFrame, sku_images: DataFrame) -> tuple[DataFrame, int]:
    """Joins the stored image bytes; drops (and counts) rows that cannot be trained.

    A row is dropped when its positive, its negative or (detail rows) its context SKU
    has no image in ``sku_images``, or it has no negative at all (null ``neg_sku_id``).
    Counting runs one Spark job over ``pairs``.

    Args:
        pairs: Rows with :data:`PAIR_KEYS_COLUMNS` (``negative_source`` optional).
        sku_images: The ``sku_images`` table (``sku_id``, ``image``).

    Returns:
        ``(rows, dropped)``: rows in :data:`PAIRS_DDL` (no nulls) and how many input rows
        were dropped.
    """
    images = sku_images.where(F.col("image").isNotNull()).select("sku_id", "image")
    joined = (pairs.transform(_join_image, images, "pos_sku_id", "pos_image")
              .transform(_join_image, images, "neg_sku_id", "neg_image")
              .transform(_join_image, images, "context_sku_id", "_context_image"))
    is_search = F.col("kind") == SEARCH
    joined = joined.withColumn(
        "context_image", F.when(is_search, F.lit(bytearray())).otherwise(F.col("_context_image")))
    trainable = (F.col("pos_image").isNotNull() & F.col("neg_image").isNotNull()
                 & F.col("context_image").isNotNull())
    dropped = joined.where(~trainable).count()
    return joined.where(trainable).transform(pairs_columns), dropped


def _join_image(pairs: DataFrame, images: DataFrame, sku_column: str, image_column: str) -> DataFrame:
    """Left-joins ``images`` on ``sku_column`` as ``image_column`` (null when missing)."""
    renamed = images.select(F.col("sku_id").alias(f"_{image_column}_sku"), F.col("image").alias(image_column))
    return pairs.join(renamed, F.col(sku_column) == F.col(f"_{image_column}_sku"), "left").drop(
        f"_{image_column}_sku")


def pairs_columns(df: DataFrame) -> DataFrame:
    """Selects and types the columns of :data:`PAIRS_DDL`, in order."""
    return df.select(
        F.col("kind").cast("string"), F.coalesce(F.col("query"), F.lit("")).alias("query"),
        F.col("context_image").cast("binary"), F.col("pos_image").cast("binary"),
        F.col("neg_image").cast("binary"), F.col("context_sku_id").cast("long"),
        F.col("pos_sku_id").cast("long"), F.col("neg_sku_id").cast("long"), F.col("date").cast("date"))

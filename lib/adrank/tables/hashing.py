"""Hashed sparse ids for the LR: feature tokens -> fixed-width ``array<long>``.

Tokens of one impression, in this order (which decides what survives truncation):

1. derived: ``page=<page>``, ``ad_category=<category id>`` (absent if the category is null);
2. crosses from config, in config order: ``"a*b"`` gives ``a=x&b=y`` for every token
   ``a=x`` and ``b=y`` present (a cross of a missing name gives no token);
3. the impression's LR feature tokens, sorted;
4. the user snapshot tokens (``u.`` prefix), sorted;
5. the ad SKU snapshot tokens (``s.`` prefix), sorted.

Repeated tokens are kept once. Each token is hashed with Spark's ``xxhash64`` (XXH64 of
the UTF-8 bytes, Spark's fixed seed 42, a published algorithm: the same in every run and
Spark version; :func:`token_id_py` reproduces it in plain Python) into ``[1, 2^bits)``:
``pmod(h, 2^bits - 1) + 1``. Id 0 is the padding. ``sparse_ids`` is padded with 0 (or
truncated, keeping the first tokens of the order above) to ``max_sparse_ids`` because
Petastorm needs lists of one length; ``num_sparse_ids`` is how many ids are real.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from adrank.core.config import FeaturesConfig

PAD_ID = 0
XXHASH64_SEED = 42
LR_TOKENS = "lr_features"
USER_TOKENS = "u_tokens"
SKU_TOKENS = "s_tokens"
TOKENS = "tokens"
_MASK64 = (1 << 64) - 1
_P1, _P2, _P3, _P4, _P5 = (
    0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5,
)


def hashed_ids(df: DataFrame, features_cfg: FeaturesConfig) -> DataFrame:
    """Adds ``sparse_ids`` (array<long>, width ``max_sparse_ids``) and ``num_sparse_ids`` (int).

    Args:
        df: Rows with ``page``, ``ad_category_id``, ``lr_features``, ``u_tokens`` and
            ``s_tokens`` (token arrays; null counts as empty).
        features_cfg: ``hash_bits``, ``max_sparse_ids`` and ``crosses``.
    """
    return (
        df.transform(with_feature_tokens, features_cfg.crosses)
        .transform(with_sparse_ids, features_cfg.hash_bits, features_cfg.max_sparse_ids)
        .drop(TOKENS)
    )


def with_feature_tokens(df: DataFrame, crosses: tuple[str, ...] = ()) -> DataFrame:
    """Adds ``tokens``: every feature token of the row, in the order of the module docstring."""
    derived = F.filter(
        F.array(
            F.concat(F.lit("page="), F.col("page")),
            F.concat(F.lit("ad_category="), F.col("ad_category_id").cast("string")),
        ),
        lambda t: t.isNotNull(),
    )
    empty = F.array().cast("array<string>")
    sources = (LR_TOKENS, USER_TOKENS, SKU_TOKENS)
    listed = F.concat(*[F.array_sort(F.coalesce(F.col(c), empty)) for c in sources])
    named = F.concat(F.col("_derived"), F.col("_listed"))
    crossed = [cross_tokens(named, cross) for cross in crosses]
    tokens = F.array_distinct(F.concat(F.col("_derived"), *crossed, F.col("_listed")))
    return (
        df.withColumn("_derived", derived)
        .withColumn("_listed", listed)
        .withColumn(TOKENS, tokens)
        .drop("_derived", "_listed")
    )


def cross_tokens(tokens: Column, cross: str) -> Column:
    """The tokens of a cross such as ``"page*ad_category"``: ``page=x&ad_category=y``.

    Every combination of the values present is produced (sorted within each name); if
    any name has no token, the result is empty.
    """
    names = [name for name in cross.split("*") if name]
    crossed = _values_of(tokens, names[0])
    for name in names[1:]:
        values = _values_of(tokens, name)
        crossed = F.flatten(F.transform(
            crossed, lambda left: F.transform(values, lambda right: F.concat(left, F.lit("&"), right))  # noqa: B023 (applied at once)
        ))
    return crossed


def _values_of(tokens: Column, name: str) -> Column:
    return F.array_sort(F.filter(tokens, lambda t: t.startswith(f"{name}=")))


def token_id(token: Column, hash_bits: int) -> Column:
    """The sparse id of a token column: ``pmod(xxhash64(token), 2^bits - 1) + 1``."""
    return F.pmod(F.xxhash64(token), F.lit((1 << hash_bits) - 1)) + F.lit(1)


def with_sparse_ids(df: DataFrame, hash_bits: int, max_sparse_ids: int) -> DataFrame:
    """Adds ``sparse_ids`` (``tokens`` hashed, truncated, padded with 0) and ``num_sparse_ids``."""
    kept = F.slice(F.transform(TOKENS, lambda t: token_id(t, hash_bits)), 1, max_sparse_ids)
    return (
        df.withColumn("_kept_ids", kept)
        .withColumn("num_sparse_ids", F.size("_kept_ids").cast("int"))
        .withColumn("sparse_ids", F.concat(
            F.col("_kept_ids"),
            F.array_repeat(F.lit(PAD_ID).cast("long"), F.lit(max_sparse_ids) - F.col("num_sparse_ids")),
        ).cast("array<long>"))
        .drop("_kept_ids")
    )


def token_id_py(token: str, hash_bits: int) -> int:
    """The id :func:`token_id` gives ``token``, computed without Spark (e.g. for serving)."""
    return xxhash64_py(token.encode("utf-8")) % ((1 << hash_bits) - 1) + 1


def xxhash64_py(data: bytes, seed: int = XXHASH64_SEED) -> int:
    """XXH64 of ``data`` as a signed 64-bit integer, equal to Spark's ``xxhash64``."""
    n, i = len(data), 0
    if n >= 32:
        acc = [(seed + _P1 + _P2) & _MASK64, (seed + _P2) & _MASK64, seed & _MASK64, (seed - _P1) & _MASK64]
        while i + 32 <= n:
            acc = [_round(a, _lane(data, i + 8 * k, 8)) for k, a in enumerate(acc)]
            i += 32
        h = sum(_rotl(a, r) for a, r in zip(acc, (1, 7, 12, 18))) & _MASK64
        for a in acc:
            h = ((h ^ _round(0, a)) * _P1 + _P4) & _MASK64
    else:
        h = (seed + _P5) & _MASK64
    return _signed(_avalanche(_tail(data, i, (h + n) & _MASK64)))


def _tail(data: bytes, i: int, h: int) -> int:
    while i + 8 <= len(data):
        h = (_rotl(h ^ _round(0, _lane(data, i, 8)), 27) * _P1 + _P4) & _MASK64
        i += 8
    if i + 4 <= len(data):
        h = (_rotl(h ^ ((_lane(data, i, 4) * _P1) & _MASK64), 23) * _P2 + _P3) & _MASK64
        i += 4
    for byte in data[i:]:
        h = (_rotl(h ^ ((byte * _P5) & _MASK64), 11) * _P1) & _MASK64
    return h


def _avalanche(h: int) -> int:
    h = ((h ^ (h >> 33)) * _P2) & _MASK64
    h = ((h ^ (h >> 29)) * _P3) & _MASK64
    return h ^ (h >> 32)


def _lane(data: bytes, i: int, width: int) -> int:
    return int.from_bytes(data[i:i + width], "little")


def _round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * _P2) & _MASK64, 31) * _P1) & _MASK64


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _MASK64


def _signed(h: int) -> int:
    return h - (1 << 64) if h >= 1 << 63 else h

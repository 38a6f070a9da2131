"""adrank's Keras models: SKU and query towers, the pairwise model, the LR.

Pure TensorFlow / tf.keras (Keras 2): nothing here reads files, config or Spark.

- :func:`sku_tower`: uint8 images -> L2-normalised embeddings. ``"mini_inception"``
  follows the talk: a strided-conv stem, inception modules whose pooling branch is a
  3x3 convolution, strided convolutions in place of pooling layers (the only pooling
  layer is the final global average), batch norm + ReLU after every convolution.
  ``"inception_v3"`` is Keras' InceptionV3 with random weights (never downloaded).
- :func:`query_tower`: query strings -> L2-normalised embeddings (a character CNN).
- :class:`PairwiseModel` (stage 1): two towers sharing weights; the context,
  positive and negative images go through the SKU tower in one concatenated batch, so
  batch norm statistics cover positives and negatives together.
- :class:`LinearModel`: LR over hashed sparse ids, read with ``tf.gather`` so its
  table's gradient is a ``tf.IndexedSlices`` (the sparse gradient path of
  :mod:`adrank.train.ranks.sparse.step`).
- :func:`copy_variables`: one model's variables into another's (fine-tuning starts).

Stage 3's models are in :mod:`adrank.train.ranks.joint_model`, the serving signatures in
:mod:`adrank.train.ranks.serving`.

Every model exposes ``sparse_variables()`` (huge hashed-id tables: FTRL, allgather)
and ``dense_variables()`` (everything else trainable: RMSProp, allreduce).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

SKU_TOWER_KINDS: tuple[str, ...] = ("mini_inception", "inception_v3")
INCEPTION_V3_MIN_SIZE = 75
PAIRWISE_BATCH_KINDS: tuple[str, ...] = ("context_image", "query")


# --------------------------------------------------------------------------------
# Variable routing (shared by every model)
# --------------------------------------------------------------------------------


class RoutedVariables:
    """Mixin: split trainable variables into sparse tables and the dense rest."""

    trainable_variables: list[tf.Variable]  # the Keras model's (declared for the type checker)

    def sparse_variables(self) -> list[tf.Variable]:
        """Tables read by id (``tf.IndexedSlices`` gradients): FTRL, allgather."""
        return []

    def dense_variables(self) -> list[tf.Variable]:
        """Every other trainable variable: RMSProp, allreduce."""
        sparse = {v.ref() for v in self.sparse_variables()}
        return [v for v in self.trainable_variables if v.ref() not in sparse]


# --------------------------------------------------------------------------------
# SKU tower
# --------------------------------------------------------------------------------


def _conv_bn(x: tf.Tensor, filters: int, kernel: int, strides: int = 1) -> tf.Tensor:
    """Conv (no bias) -> batch norm -> ReLU."""
    x = tf.keras.layers.Conv2D(filters, kernel, strides=strides, padding="same",
                               use_bias=False)(x)
    x = tf.keras.layers.BatchNormalization()(x)
    return tf.keras.layers.ReLU()(x)


def _inception_module(x: tf.Tensor, width: int, strides: int = 1) -> tf.Tensor:
    """Four parallel branches, concatenated; ``strides=2`` makes it a reduction module.

    Branches: 1x1; 1x1 reduce -> 3x3; 1x1 reduce -> 3x3 -> 3x3 (a factorised 5x5);
    and a 3x3 convolution where Inception has its pooling branch.
    """
    reduce = max(width // 2, 1)
    one = _conv_bn(x, width, 1, strides)
    three = _conv_bn(_conv_bn(x, reduce, 1), width, 3, strides)
    five = _conv_bn(_conv_bn(_conv_bn(x, reduce, 1), width, 3), width, 3, strides)
    pool_like = _conv_bn(x, width, 3, strides)
    return tf.keras.layers.Concatenate()([one, three, five, pool_like])


def _mini_inception_features(x: tf.Tensor, width: int) -> tf.Tensor:
    """Strided stem (/4), inception, reduction inception (/2), inception, global pool."""
    x = _conv_bn(x, width, 3, strides=2)
    x = _conv_bn(x, 2 * width, 3, strides=2)
    x = _inception_module(x, width)
    x = _inception_module(x, 2 * width, strides=2)
    x = _inception_module(x, 2 * width)
    return tf.keras.layers.GlobalAveragePooling2D()(x)


def _inception_v3_features(x: tf.Tensor, image_size: int) -> tf.Tensor:
    """Keras InceptionV3, random weights, global average pool."""
    if image_size < INCEPTION_V3_MIN_SIZE:
        raise ValueError(f"inception_v3 needs image_size >= {INCEPTION_V3_MIN_SIZE}, "
                         f"got {image_size}")
    backbone = tf.keras.applications.InceptionV3(
        weights=None, include_top=False, input_shape=(image_size, image_size, 3),
        pooling="avg")
    return backbone(x)


def sku_tower(kind: str, image_size: int, embedding_dim: int,
              width: int = 16) -> tf.keras.Model:
    """The CNN that embeds SKU images.

    Args:
        kind: ``"mini_inception"`` or ``"inception_v3"``.
        image_size: Side S of the square input images.
        embedding_dim: Embedding size D.
        width: Base number of filters of ``"mini_inception"`` (ignored by
            ``"inception_v3"``).

    Returns:
        A model mapping uint8 ``[B, S, S, 3]`` to L2-normalised float32 ``[B, D]``.

    Raises:
        ValueError: On an unknown kind, or ``inception_v3`` below 75x75.
    """
    if kind not in SKU_TOWER_KINDS:
        raise ValueError(f"sku tower kind must be one of {SKU_TOWER_KINDS}, got {kind!r}")
    images = tf.keras.Input((image_size, image_size, 3), dtype=tf.uint8, name="image")
    x = tf.keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(images)
    if kind == "mini_inception":
        x = _mini_inception_features(x, width)
    else:
        x = _inception_v3_features(x, image_size)
    x = tf.keras.layers.Dense(embedding_dim)(x)
    x = tf.keras.layers.UnitNormalization(axis=-1)(x)
    return tf.keras.Model(images, x, name=f"sku_tower_{kind}")


# --------------------------------------------------------------------------------
# Query tower
# --------------------------------------------------------------------------------


class CharIds(tf.keras.layers.Layer):
    """Strings -> character ids ``[B, max_chars]`` (int32; 0 = padding).

    Lower-cases (UTF-8 aware), decodes to code points (invalid bytes become U+FFFD),
    and folds each code point into ``1 .. char_vocab - 1``; truncates or pads with 0.
    """

    def __init__(self, max_chars: int = 32, char_vocab: int = 256, **kwargs):
        super().__init__(**kwargs)
        self.max_chars = max_chars
        self.char_vocab = char_vocab

    def call(self, queries: tf.Tensor) -> tf.Tensor:
        lowered = tf.strings.lower(tf.reshape(queries, [-1]), encoding="utf-8")
        points = tf.strings.unicode_decode(lowered, "UTF-8", errors="replace")
        ids = tf.ragged.map_flat_values(lambda p: p % (self.char_vocab - 1) + 1, points)
        return ids.to_tensor(default_value=0, shape=[None, self.max_chars])

    def get_config(self) -> dict:
        return {**super().get_config(), "max_chars": self.max_chars,
                "char_vocab": self.char_vocab}


def query_tower(embedding_dim: int, max_chars: int = 32, char_vocab: int = 256,
                width: int = 32) -> tf.keras.Model:
    """The character CNN that embeds search queries.

    Args:
        embedding_dim: Embedding size D (the SKU tower's).
        max_chars: Characters kept per query (longer ones are truncated).
        char_vocab: Number of character ids, padding (0) included.
        width: Character embedding size and filters per convolution width.

    Returns:
        A model mapping tf.string ``[B]`` to L2-normalised float32 ``[B, D]``.
    """
    queries = tf.keras.Input((), dtype=tf.string, name="query")
    ids = CharIds(max_chars, char_vocab)(queries)
    chars = tf.keras.layers.Embedding(char_vocab, width)(ids)
    grams = [tf.keras.layers.GlobalMaxPooling1D()(
        tf.keras.layers.Conv1D(width, k, padding="same", activation="relu")(chars))
        for k in (2, 3, 4)]
    x = tf.keras.layers.Concatenate()(grams)
    x = tf.keras.layers.Dense(embedding_dim)(x)
    x = tf.keras.layers.UnitNormalization(axis=-1)(x)
    return tf.keras.Model(queries, x, name="query_tower")


# --------------------------------------------------------------------------------
# Stage 1: the pairwise model
# --------------------------------------------------------------------------------


def cosine(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
    """Row-wise cosine similarity of ``[B, D]`` tensors -> ``[B]``."""
    return tf.reduce_sum(tf.math.l2_normalize(x, -1) * tf.math.l2_normalize(y, -1), -1)


def pairwise_loss(sim_pos: tf.Tensor, sim_neg: tf.Tensor, scale: float = 10.0) -> tf.Tensor:
    """Logistic pairwise ranking loss: mean softplus(-scale * (sim_pos - sim_neg))."""
    return tf.reduce_mean(tf.math.softplus(-scale * (sim_pos - sim_neg)))


class PairwiseModel(RoutedVariables, tf.keras.Model):
    """Stage 1: SKU (and query) towers trained on (context, positive, negative) triplets.

    A batch is a dict with ``"pos_image"`` and ``"neg_image"`` (uint8 ``[B, S, S, 3]``)
    and exactly one context: ``"context_image"`` (detail page: uint8, same shape) or
    ``"query"`` (search page: tf.string ``[B]``). All images of a batch go through the
    SKU tower in one call (3B or 2B rows), so batch norm normalises positives and
    negatives with the same statistics; the result is split afterwards.
    """

    def __init__(self, sku_tower: tf.keras.Model,
                 query_tower: tf.keras.Model | None = None, **kwargs):
        super().__init__(**kwargs)
        self.sku_tower = sku_tower
        self.query_tower = query_tower

    def call(self, batch: Mapping[str, tf.Tensor],
             training: bool | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """Returns ``(sim_pos, sim_neg)``, cosine similarities ``[B]`` each."""
        kind = _batch_kind(batch)
        candidates = [batch["pos_image"], batch["neg_image"]]
        if kind == "context_image":
            images = [batch["context_image"], *candidates]
            context, pos, neg = self._embed_together(images, training)
        else:
            if self.query_tower is None:
                raise ValueError("a search batch ('query') needs a query tower")
            context = self.query_tower(batch["query"], training=training)
            pos, neg = self._embed_together(candidates, training)
        return cosine(context, pos), cosine(context, neg)

    def _embed_together(self, images: list[tf.Tensor],
                        training: bool | None) -> list[tf.Tensor]:
        """One SKU tower call over the concatenated images, split back per input."""
        sizes = [tf.shape(image)[0] for image in images]
        embeddings = self.sku_tower(tf.concat(images, axis=0), training=training)
        return tf.split(embeddings, tf.stack(sizes), num=len(images), axis=0)

    def embed_sku(self, images: tf.Tensor) -> tf.Tensor:
        """Inference-mode SKU embeddings of uint8 images ``[B, S, S, 3]``."""
        return self.sku_tower(images, training=False)

    def embed_query(self, queries: tf.Tensor) -> tf.Tensor:
        """Inference-mode query embeddings of strings ``[B]``."""
        if self.query_tower is None:
            raise ValueError("this model has no query tower")
        return self.query_tower(queries, training=False)


def _batch_kind(batch: Mapping[str, tf.Tensor]) -> str:
    """``"context_image"`` (detail triplets) or ``"query"`` (search triplets)."""
    present = [key for key in PAIRWISE_BATCH_KINDS if key in batch]
    if len(present) != 1:
        raise ValueError(f"a pairwise batch needs exactly one of {PAIRWISE_BATCH_KINDS}, "
                         f"got keys {sorted(batch)}")
    return present[0]


# --------------------------------------------------------------------------------
# LR over hashed sparse ids
# --------------------------------------------------------------------------------


class LinearModel(RoutedVariables, tf.keras.Model):
    """Logistic regression over hashed sparse ids.

    Inputs: ``sparse_ids`` int64 ``[B, K]`` padded with 0 and ``num_sparse_ids``
    ``[B]``. Only the first ``num_sparse_ids`` ids of a row that are not 0 are
    features; the others are never gathered, so the table's ``tf.IndexedSlices``
    gradient names only real ids.
    """

    def __init__(self, hash_bits: int, **kwargs):
        super().__init__(**kwargs)
        self.hash_bits = hash_bits
        self.lr_weights = self.add_weight(name="lr_weights", shape=(2 ** hash_bits, 1),
                                          initializer="zeros", trainable=True)
        self.lr_bias = self.add_weight(name="lr_bias", shape=(1,), initializer="zeros",
                                       trainable=True)

    def call(self, batch: Mapping[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """Returns the logits ``[B]``."""
        ids = tf.cast(batch["sparse_ids"], tf.int64)
        mask = _real_id_mask(ids, batch["num_sparse_ids"])
        rows = tf.where(mask)[:, 0]
        weights = tf.gather(self.lr_weights, tf.boolean_mask(ids, mask))[:, 0]
        logits = tf.math.unsorted_segment_sum(weights, rows, tf.shape(ids)[0])
        return logits + self.lr_bias[0]

    def sparse_variables(self) -> list[tf.Variable]:
        return [self.lr_weights]


def _real_id_mask(ids: tf.Tensor, counts: tf.Tensor) -> tf.Tensor:
    """True where a position is below its row's count and holds a non-zero id."""
    positions = tf.range(tf.shape(ids)[1], dtype=tf.int64)[tf.newaxis, :]
    within = positions < tf.cast(counts, tf.int64)[:, tf.newaxis]
    return tf.logical_and(within, tf.not_equal(ids, 0))


def copy_variables(source: Sequence[tf.Variable], target: Sequence[tf.Variable]) -> None:
    """Assigns ``source`` to ``target`` one by one (same order and shapes, or ValueError)."""
    if len(source) != len(target):
        raise ValueError(f"cannot copy {len(source)} variables into {len(target)}")
    for i, (value, variable) in enumerate(zip(source, target)):
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"variable {i} ({variable.name}): shape {tuple(value.shape)} "
                             f"does not fit {tuple(variable.shape)}")
        variable.assign(value)


__all__ = ["INCEPTION_V3_MIN_SIZE", "PAIRWISE_BATCH_KINDS", "SKU_TOWER_KINDS", "CharIds", "LinearModel",
           "PairwiseModel", "RoutedVariables", "copy_variables", "cosine", "pairwise_loss", "query_tower",
           "sku_tower"]

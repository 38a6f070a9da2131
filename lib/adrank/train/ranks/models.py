"""adrank's Keras models: SKU and query towers, the pairwise model, LR, interactions.

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
- :class:`Interaction` (stage 3): dot, elementwise product or a small DNN over the
  context embedding x and the candidate embedding y; :class:`JointModel`, the LR plus
  one interaction (and, fine-tuning, the towers), with :func:`joint_signatures` (``score``).
- :func:`export_signatures`: serving functions for ``tf.saved_model.save``, and
  :func:`serving_module`, the object to save them with.

Every model exposes ``sparse_variables()`` (huge hashed-id tables: FTRL, allgather)
and ``dense_variables()`` (everything else trainable: RMSProp, allreduce).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import tensorflow as tf

SKU_TOWER_KINDS: tuple[str, ...] = ("mini_inception", "inception_v3")
INTERACTION_KINDS: tuple[str, ...] = ("dot", "product", "dnn")
INCEPTION_V3_MIN_SIZE = 75
PAIRWISE_BATCH_KINDS: tuple[str, ...] = ("context_image", "query")
PAGE_KINDS: tuple[str, ...] = ("detail", "feed", "search")  # a joint batch's ``page`` indexes it


# --------------------------------------------------------------------------------
# Variable routing (shared by every model)
# --------------------------------------------------------------------------------


class _RoutedVariables:
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


class PairwiseModel(_RoutedVariables, tf.keras.Model):
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


class LinearModel(_RoutedVariables, tf.keras.Model):
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


# --------------------------------------------------------------------------------
# Stage 3: interaction modules
# --------------------------------------------------------------------------------


class Interaction(tf.keras.layers.Layer):
    """How the context embedding x meets the candidate embedding y for the LR.

    ``"dot"``: cosine sim(x, y) ``[B, 1]`` (one extra LR feature); ``"product"``:
    x * y ``[B, D]`` (LR inputs with their own weights); ``"dnn"``: a two-layer ReLU
    MLP over concat(x, y) -> ``[B, hidden]``.
    """

    def __init__(self, kind: str, hidden: int = 16, **kwargs):
        super().__init__(**kwargs)
        if kind not in INTERACTION_KINDS:
            raise ValueError(f"interaction kind must be one of {INTERACTION_KINDS}, "
                             f"got {kind!r}")
        self.kind = kind
        self.hidden = hidden
        self.mlp = None
        if kind == "dnn":
            self.mlp = tf.keras.Sequential([
                tf.keras.layers.Dense(hidden, activation="relu"),
                tf.keras.layers.Dense(hidden, activation="relu")])

    def call(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        if self.kind == "dot":
            return cosine(x, y)[:, tf.newaxis]
        if self.kind == "product":
            return x * y
        if self.mlp is None:
            raise ValueError(f"interaction {self.kind!r} has no MLP")
        return self.mlp(tf.concat([x, y], axis=-1))

    def get_config(self) -> dict:
        return {**super().get_config(), "kind": self.kind, "hidden": self.hidden}


class JointModel(_RoutedVariables, tf.keras.Model):
    """Stage 3: the LR over hashed ids plus an interaction of x (context) and y (ad).

    ``logit = LR(sparse_ids) + head(interaction(x, y), page)``. A batch holds the LR inputs,
    ``page`` (int32 index into :data:`PAGE_KINDS`) and, frozen, ``x`` / ``y`` float32
    ``[B, D]`` with ``x_present`` / ``y_present`` (float32 ``[B]``, 0 = no embedding: a
    learned "no context" vector per page, or a learned "no ad image" vector, stands in).
    With towers (``--finetune-cnn``) ``y`` and the detail page's ``x`` come from the SKU
    tower over ``ad_image`` / ``context_image`` (uint8 ``[B, S, S, 3]``, one tower call so
    batch norm sees both), the search page's ``x`` from the query tower over ``query``;
    the feed's ``x`` (a behaviour mean) still comes from the batch.

    ``dot`` and ``product`` cross their features with the page (one weight per page and
    feature: the similarity of a query and a SKU is on another scale than that of two
    SKUs); ``dnn`` sees the page as a one-hot input. The LR table is the only sparse
    variable; the interaction, the stand-in vectors and the towers are dense.
    """

    def __init__(self, kind: str, hash_bits: int, embedding_dim: int, hidden: int = 32,
                 sku_tower: tf.keras.Model | None = None, query_tower: tf.keras.Model | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.kind = kind
        self.linear = LinearModel(hash_bits)
        self.interaction = Interaction(kind, hidden)
        pages = len(PAGE_KINDS)
        self.no_context = self.add_weight(name="no_context", shape=(pages, embedding_dim),
                                          initializer="zeros", trainable=True)
        self.no_ad_image = self.add_weight(name="no_ad_image", shape=(embedding_dim,),
                                           initializer="zeros", trainable=True)
        # dot/product start as the plain LR (zero head); the MLP needs a live head to learn.
        head_init = "glorot_uniform" if kind == "dnn" else "zeros"
        self.head = tf.keras.layers.Dense(1, use_bias=False, kernel_initializer=head_init, name="head")
        # Built now, not at the first call: the train step lists the dense variables up front.
        if kind == "dnn" and self.interaction.mlp is not None:
            self.interaction.mlp.build((None, 2 * embedding_dim + pages))
            self.head.build((None, hidden))
        else:
            self.head.build((None, pages * (1 if kind == "dot" else embedding_dim)))
        self.sku_tower = sku_tower
        self.query_tower = query_tower

    @property
    def finetunes(self) -> bool:
        """True when the towers are part of the model (trained end to end)."""
        return self.sku_tower is not None

    def call(self, batch: Mapping[str, tf.Tensor], training: bool | None = None) -> tf.Tensor:
        """Returns the logits ``[B]``."""
        x, y = self.embeddings(batch, training=training)
        return self.score_logits(batch, x, y, training=training)

    def embeddings(self, batch: Mapping[str, tf.Tensor],
                   training: bool | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """``(x, y)`` of a batch: from the batch (frozen) or from the towers (fine-tuning)."""
        x = tf.cast(batch["x"], tf.float32)
        if self.sku_tower is None:
            return x, tf.cast(batch["y"], tf.float32)
        ads, contexts = batch["ad_image"], batch["context_image"]
        both = self.sku_tower(tf.concat([ads, contexts], axis=0), training=training)
        y, context_sku = tf.split(both, 2, axis=0)
        page = tf.cast(batch["page"], tf.int32)[:, tf.newaxis]
        x = tf.where(page == PAGE_KINDS.index("detail"), context_sku, x)
        if self.query_tower is not None:
            x = tf.where(page == PAGE_KINDS.index("search"), self.query_tower(batch["query"], training=training), x)
        return x, y

    def score_logits(self, batch: Mapping[str, tf.Tensor], x: tf.Tensor, y: tf.Tensor,
                     training: bool | None = None) -> tf.Tensor:
        """The logits from the LR inputs, ``page``, presence flags and the embeddings x, y."""
        page = tf.cast(batch["page"], tf.int32)
        x_present = tf.cast(batch["x_present"], tf.float32)[:, tf.newaxis]
        y_present = tf.cast(batch["y_present"], tf.float32)[:, tf.newaxis]
        x = x_present * x + (1.0 - x_present) * tf.gather(self.no_context, page)
        y = y_present * y + (1.0 - y_present) * self.no_ad_image[tf.newaxis, :]
        one_hot = tf.one_hot(page, len(PAGE_KINDS))
        if self.kind == "dnn":
            features = self.interaction(tf.concat([x, one_hot], -1), y)
        else:
            features = self.interaction(x, y)
            features = tf.reshape(features[:, tf.newaxis, :] * one_hot[:, :, tf.newaxis],
                                  [-1, len(PAGE_KINDS) * features.shape[-1]])
        return self.linear(batch, training=training) + self.head(features)[:, 0]

    def sparse_variables(self) -> list[tf.Variable]:
        return self.linear.sparse_variables()


def joint_loss(model: JointModel, batch: Mapping[str, tf.Tensor]) -> tf.Tensor:
    """Mean sigmoid cross-entropy of the joint model's logits."""
    labels = tf.cast(batch["label"], tf.float32)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, model(batch, training=True)))


def copy_variables(source: Sequence[tf.Variable], target: Sequence[tf.Variable]) -> None:
    """Assigns ``source`` to ``target`` one by one (same order and shapes, or ValueError)."""
    if len(source) != len(target):
        raise ValueError(f"cannot copy {len(source)} variables into {len(target)}")
    for i, (value, variable) in enumerate(zip(source, target)):
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"variable {i} ({variable.name}): shape {tuple(value.shape)} "
                             f"does not fit {tuple(variable.shape)}")
        variable.assign(value)


# --------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------


def export_signatures(pairwise_model: PairwiseModel, linear_model: LinearModel | None,
                      image_size: int) -> dict[str, tf.types.experimental.GenericFunction]:
    """Serving functions with fixed input signatures, for ``tf.saved_model.save``.

    Save them with an object that tracks the models' variables, e.g.::

        module = serving_module(pairwise_model, linear_model)
        tf.saved_model.save(module, path, signatures=export_signatures(...))

    Args:
        pairwise_model: Supplies ``"sku_embedding"`` and, if it has a query tower,
            ``"query_embedding"`` (each returns ``{"embedding": [B, D]}``).
        linear_model: Supplies ``"lr_score"`` (``{"probability": [B]}`` from
            ``sparse_ids`` int64 ``[B, K]`` and ``num_sparse_ids`` int32 ``[B]``);
            ``None`` leaves it out.
        image_size: Side S of the uint8 ``[B, S, S, 3]`` images.

    Returns:
        Signature name -> ``tf.function``.
    """
    image_spec = tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, "image")
    signatures = {"sku_embedding": tf.function(
        lambda image: {"embedding": pairwise_model.embed_sku(image)},
        input_signature=[image_spec])}
    if pairwise_model.query_tower is not None:
        signatures["query_embedding"] = tf.function(
            lambda query: {"embedding": pairwise_model.embed_query(query)},
            input_signature=[tf.TensorSpec([None], tf.string, "query")])
    if linear_model is not None:
        signatures["lr_score"] = tf.function(
            lambda sparse_ids, num_sparse_ids: {"probability": tf.sigmoid(linear_model(
                {"sparse_ids": sparse_ids, "num_sparse_ids": num_sparse_ids},
                training=False))},
            input_signature=[tf.TensorSpec([None, None], tf.int64, "sparse_ids"),
                             tf.TensorSpec([None], tf.int32, "num_sparse_ids")])
    return signatures


def joint_signatures(model: JointModel, embedding_dim: int,
                     image_size: int) -> dict[str, tf.types.experimental.GenericFunction]:
    """Serving functions of a joint model: ``score`` (and the towers' when fine-tuned).

    ``score`` takes what serving has for a candidate: ``sparse_ids`` int64 ``[B, K]``,
    ``num_sparse_ids`` int32 ``[B]``, ``page`` int32 ``[B]`` (index into
    :data:`PAGE_KINDS`), ``x`` / ``y`` float32 ``[B, D]`` (context and ad embeddings: the
    serving snapshot, the query tower, the behaviour mean) and ``x_present`` /
    ``y_present`` float32 ``[B]``; it returns ``{"probability": [B]}``. A fine-tuned model
    also exports ``sku_embedding`` and ``query_embedding`` of its own towers, the
    embeddings its ``score`` expects.
    """
    def score(sparse_ids, num_sparse_ids, page, x, x_present, y, y_present):
        batch = {"sparse_ids": sparse_ids, "num_sparse_ids": num_sparse_ids, "page": page,
                 "x_present": x_present, "y_present": y_present}
        return {"probability": tf.sigmoid(model.score_logits(batch, x, y, training=False))}

    signatures = {"score": tf.function(score, input_signature=[
        tf.TensorSpec([None, None], tf.int64, "sparse_ids"), tf.TensorSpec([None], tf.int32, "num_sparse_ids"),
        tf.TensorSpec([None], tf.int32, "page"), tf.TensorSpec([None, embedding_dim], tf.float32, "x"), tf.TensorSpec([None], tf.float32, "x_present"),
        tf.TensorSpec([None, embedding_dim], tf.float32, "y"), tf.TensorSpec([None], tf.float32, "y_present")])}
    if model.sku_tower is not None:
        tower = model.sku_tower
        signatures["sku_embedding"] = tf.function(
            lambda image: {"embedding": tower(image, training=False)},
            input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, "image")])
    if model.query_tower is not None:
        queries = model.query_tower
        signatures["query_embedding"] = tf.function(
            lambda query: {"embedding": queries(query, training=False)},
            input_signature=[tf.TensorSpec([None], tf.string, "query")])
    return signatures


def serving_module(*models: tf.keras.Model | None) -> tf.Module:
    """A ``tf.Module`` that tracks the models' variables, to save signatures with.

    It tracks variables, not the Keras models: saving then skips Keras' per-layer
    serialisation (measured about 3x faster to save and 5x faster to load for the
    tiny test models); the signatures are all a server needs.
    """
    module = tf.Module()
    module.model_variables = [v for model in models if model is not None
                              for v in model.variables]
    return module

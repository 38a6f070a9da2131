"""Stage 3's Keras models: an interaction of embeddings on top of the LR (pure TensorFlow).

- :class:`Interaction`: dot, elementwise product or a small DNN over the context
  embedding x and the candidate embedding y.
- :class:`JointModel`: the LR plus one interaction (and, fine-tuning, the towers), trained
  with :func:`joint_loss` and served by :func:`joint_signatures` (``score``).

Like :mod:`adrank.train.ranks.models`, nothing here reads files, config or Spark.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from adrank.train.ranks.models import LinearModel, RoutedVariables, cosine

INTERACTION_KINDS: tuple[str, ...] = ("dot", "product", "dnn")
PAGE_KINDS: tuple[str, ...] = ("detail", "feed", "search")  # a joint batch's ``page`` indexes it


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


class JointModel(RoutedVariables, tf.keras.Model):
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


__all__ = ["INTERACTION_KINDS", "PAGE_KINDS", "Interaction", "JointModel", "joint_loss", "joint_signatures"]

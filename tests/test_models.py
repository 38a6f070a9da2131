"""One-step CPU smoke tests of adrank.train.ranks.models on tiny configs.

TensorFlow keeps to one intra-op and one inter-op thread (set at import, before any
op runs; the machine is small and shared). Every test seeds Keras, numpy and TF.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:  # another test module already started the TF runtime
    pass

from adrank.train.evaluate import pair_metrics  # noqa: E402
from adrank.train.ranks.joint_model import Interaction  # noqa: E402
from adrank.train.ranks.models import (  # noqa: E402
    CharIds,
    LinearModel,
    PairwiseModel,
    pairwise_loss,
    query_tower,
    sku_tower,
)
from adrank.train.ranks.serving import export_signatures, serving_module  # noqa: E402

SIZE = 32
DIM = 16
WIDTH = 8
BATCH = 16
POOLING = (tf.keras.layers.MaxPooling2D, tf.keras.layers.AveragePooling2D,
           tf.keras.layers.GlobalMaxPooling2D, tf.keras.layers.GlobalAveragePooling2D)


@pytest.fixture(autouse=True)
def _seed():
    tf.keras.utils.set_random_seed(0)


def tiny_pairwise(with_query: bool = True) -> PairwiseModel:
    tower = sku_tower("mini_inception", SIZE, DIM, width=WIDTH)
    return PairwiseModel(tower, query_tower(DIM, width=WIDTH) if with_query else None)


def random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def striped_images(horizontal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Images of random colour whose class is the stripes' orientation.

    (Two plain colour classes are ranked right by a randomly initialised tower
    already, so they could not show learning.)
    """
    stripes = np.broadcast_to(((np.arange(SIZE) // 4) % 2)[:, None], (SIZE, SIZE))
    pattern = np.where(horizontal[:, None, None], stripes, stripes.T)[..., None]
    colour = rng.uniform(0, 255, (len(horizontal), 1, 1, 3))
    noisy = colour * (0.5 + 0.5 * pattern) + rng.normal(0, 20, (len(horizontal), SIZE, SIZE, 3))
    return np.clip(noisy, 0, 255).astype(np.uint8)


def toy_detail_batch(rng: np.random.Generator, n: int = BATCH) -> dict[str, np.ndarray]:
    """Context and positive share a stripe orientation; the negative has the other."""
    cls = rng.integers(0, 2, n).astype(bool)
    return {"context_image": striped_images(cls, rng), "pos_image": striped_images(cls, rng),
            "neg_image": striped_images(~cls, rng)}


def search_batch(n: int = 4) -> dict[str, tf.Tensor]:
    return {"query": tf.constant(["red shoes", "Blue HAT", "ünïcode ☂", ""][:n]),
            "pos_image": random_images(n, 1), "neg_image": random_images(n, 2)}


def detail_batch(n: int = 4) -> dict[str, np.ndarray]:
    return {"context_image": random_images(n, 0), "pos_image": random_images(n, 1),
            "neg_image": random_images(n, 2)}


# --------------------------------------------------------------------------------
# SKU tower
# --------------------------------------------------------------------------------


def test_mini_inception_gives_unit_embeddings_and_pools_only_at_the_end():
    tower = sku_tower("mini_inception", SIZE, DIM, width=WIDTH)
    out = tower(random_images(4)).numpy()
    assert out.shape == (4, DIM)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    pooling = [layer for layer in tower.layers if isinstance(layer, POOLING)]
    assert [type(layer) for layer in pooling] == [tf.keras.layers.GlobalAveragePooling2D]
    strided = [layer for layer in tower.layers
               if isinstance(layer, tf.keras.layers.Conv2D) and layer.strides == (2, 2)]
    assert len(strided) >= 3  # two in the stem, the reduction module's branches


def test_inception_v3_builds_at_75_and_refuses_smaller():
    tower = sku_tower("inception_v3", 75, DIM)
    images = np.random.default_rng(0).integers(0, 256, (2, 75, 75, 3), dtype=np.uint8)
    out = tower(images)
    assert out.shape == (2, DIM)
    with pytest.raises(ValueError, match="75"):
        sku_tower("inception_v3", 74, DIM)
    with pytest.raises(ValueError, match="kind"):
        sku_tower("resnet", SIZE, DIM)


# --------------------------------------------------------------------------------
# Query tower
# --------------------------------------------------------------------------------


def test_query_tower_takes_any_length_and_unicode():
    tower = query_tower(DIM, max_chars=8, width=WIDTH)
    queries = tf.constant(["", "a", "RED Shoes", "Straße über 日本語 🙂", "x" * 100,
                           b"\xff\xfe broken utf-8"])
    out = tower(queries).numpy()
    assert out.shape == (6, DIM)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    same = tower(tf.constant(["ÜBER", "über", "x" * 8, "x" * 50])).numpy()
    np.testing.assert_allclose(same[0], same[1], atol=1e-6)  # lower-cased
    np.testing.assert_allclose(same[2], same[3], atol=1e-6)  # truncated at max_chars


def test_char_ids_lower_case_pad_with_zero_and_truncate():
    ids = CharIds(max_chars=4)(tf.constant(["AB", "abcdef", "é"])).numpy()
    assert ids.tolist() == [[98, 99, 0, 0], [98, 99, 100, 101], [ord("é") + 1, 0, 0, 0]]
    big = CharIds(max_chars=2, char_vocab=16)(tf.constant(["日本"])).numpy()
    assert ((big >= 1) & (big < 16)).all()


# --------------------------------------------------------------------------------
# Pairwise model
# --------------------------------------------------------------------------------


def test_pairwise_loss_and_accuracy_values():
    pos, neg = tf.constant([0.9, 0.1]), tf.constant([0.5, 0.3])
    expected = np.mean(np.log1p(np.exp(-10.0 * np.array([0.4, -0.2]))))
    assert float(pairwise_loss(pos, neg)) == pytest.approx(expected, rel=1e-5)
    assert pair_metrics(pos, neg)["pairwise_accuracy"] == 0.5  # what evaluation reports


def test_one_step_reaches_every_trainable_variable():
    model = tiny_pairwise()
    optimizer = tf.keras.optimizers.legacy.RMSprop(1e-3)
    with tf.GradientTape() as tape:
        loss = (pairwise_loss(*model(detail_batch(), training=True))
                + pairwise_loss(*model(search_batch(), training=True)))
    grads = tape.gradient(loss, model.trainable_variables)
    for grad, var in zip(grads, model.trainable_variables):
        assert grad is not None, var.name
        assert np.abs(tf.convert_to_tensor(grad).numpy()).max() > 0, var.name
    before = [v.numpy().copy() for v in model.trainable_variables]
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    assert all((b != v.numpy()).any() for b, v in zip(before, model.trainable_variables))
    assert model.sparse_variables() == []
    assert len(model.dense_variables()) == len(model.trainable_variables)


def test_detail_batch_leaves_query_tower_without_gradient():
    model = tiny_pairwise()
    with tf.GradientTape() as tape:
        loss = pairwise_loss(*model(detail_batch(), training=True))
    grads = tape.gradient(loss, model.query_tower.trainable_variables)
    assert all(grad is None for grad in grads)


def test_pairwise_learns_a_separable_toy_task():
    model = tiny_pairwise(with_query=False)
    optimizer = tf.keras.optimizers.legacy.RMSprop(2e-3)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = pairwise_loss(*model(batch, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

    held_out = toy_detail_batch(np.random.default_rng(99), n=32)

    def evaluate() -> tuple[float, float]:  # batch statistics, as in training
        sims = model(held_out, training=True)
        return float(pairwise_loss(*sims)), pair_metrics(*sims)["pairwise_accuracy"]

    loss0, acc0 = evaluate()
    rng = np.random.default_rng(0)
    for _ in range(20):
        step(toy_detail_batch(rng))
    loss1, acc1 = evaluate()
    assert acc0 < 0.8  # the task is not solved at initialisation
    assert acc1 > 0.9
    assert loss1 < loss0 / 4


@pytest.mark.parametrize("kind", ["detail", "search"])
def test_batch_norm_statistics_cover_the_concatenated_batch(kind):
    model = tiny_pairwise()
    batch = detail_batch() if kind == "detail" else search_batch()
    images = [batch[key] for key in ("context_image", "pos_image", "neg_image") if key in batch]
    first_bn = next(layer for layer in model.sku_tower.layers
                    if isinstance(layer, tf.keras.layers.BatchNormalization))
    bn_input = tf.keras.Model(model.sku_tower.input, first_bn.input)
    means = [tf.reduce_mean(bn_input(x), axis=[0, 1, 2]).numpy() for x in images]
    momentum = first_bn.momentum
    # One call over all rows: one update with the mean of the whole batch.
    together = (1 - momentum) * np.mean(means, axis=0)
    # One call per input: one update each, in turn.
    apart = np.zeros_like(together)
    for mean in means:
        apart = momentum * apart + (1 - momentum) * mean

    model(batch, training=True)

    moving = first_bn.moving_mean.numpy()
    np.testing.assert_allclose(moving, together, rtol=1e-4, atol=1e-7)
    assert not np.allclose(moving, apart, rtol=1e-2)


def test_pairwise_batch_needs_exactly_one_context():
    model = tiny_pairwise(with_query=False)
    with pytest.raises(ValueError, match="exactly one"):
        model({**detail_batch(), "query": tf.constant(["a"] * 4)})
    with pytest.raises(ValueError, match="exactly one"):
        model({"pos_image": random_images(2), "neg_image": random_images(2)})
    with pytest.raises(ValueError, match="query tower"):
        model(search_batch())


# --------------------------------------------------------------------------------
# LR over hashed sparse ids
# --------------------------------------------------------------------------------


def lr_batch(ids: list[list[int]], counts: list[int]) -> dict[str, tf.Tensor]:
    return {"sparse_ids": tf.constant(ids, tf.int64),
            "num_sparse_ids": tf.constant(counts, tf.int32)}


def test_lr_gradient_is_indexed_slices_over_real_ids_only():
    model = LinearModel(hash_bits=6)
    batch = lr_batch([[3, 5, 9, 0], [7, 0, 11, 0]], [2, 3])  # 9 and 0 are beyond/pads
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(batch))
    grad_w, grad_b = tape.gradient(loss, [model.lr_weights, model.lr_bias])
    assert isinstance(grad_w, tf.IndexedSlices)
    assert sorted(grad_w.indices.numpy().tolist()) == [3, 5, 7, 11]
    assert float(grad_b[0]) == 2.0
    assert model.sparse_variables() == [model.lr_weights]
    assert model.dense_variables() == [model.lr_bias]


def test_lr_ignores_ids_beyond_the_count_and_padding():
    model = LinearModel(hash_bits=6)
    model.lr_weights.assign(tf.random.normal([64, 1]))
    model.lr_bias.assign([0.25])
    weights = model.lr_weights.numpy()[:, 0]
    logits = model(lr_batch([[3, 5, 9, 13], [0, 7, 0, 0], [4, 4, 4, 4]], [2, 2, 0])).numpy()
    expected = [weights[3] + weights[5], weights[7], 0.0]
    np.testing.assert_allclose(logits, np.add(expected, 0.25), rtol=1e-6)


def test_lr_learns_a_toy_problem_with_sparse_ftrl():
    rng = np.random.default_rng(0)
    n, k = 256, 6
    ids = rng.integers(1, 64, (n, k))
    counts = rng.integers(1, k + 1, n)
    real = np.arange(k)[None, :] < counts[:, None]
    ids = np.where(real, ids, 0)
    labels = (np.where(real, ids % 2, 0).sum(1) > real.sum(1) / 2).astype(np.float32)
    batch = lr_batch(ids.tolist(), counts.tolist())
    model = LinearModel(hash_bits=6)
    optimizer = tf.keras.optimizers.legacy.Ftrl(0.5)

    def accuracy() -> float:
        return float(np.mean((model(batch).numpy() > 0) == labels))

    acc0 = accuracy()
    for _ in range(20):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, model(batch)))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                      model.trainable_variables))
    assert accuracy() > max(acc0, 0.9)


# --------------------------------------------------------------------------------
# Interactions
# --------------------------------------------------------------------------------


def test_interactions_shapes_and_values():
    rng = np.random.default_rng(0)
    x = tf.math.l2_normalize(rng.normal(size=(3, DIM)).astype(np.float32), -1)
    y = tf.math.l2_normalize(rng.normal(size=(3, DIM)).astype(np.float32), -1)
    dot = Interaction("dot")(x, y).numpy()
    np.testing.assert_allclose(dot[:, 0], np.sum(x * y, -1), rtol=1e-5)
    np.testing.assert_allclose(Interaction("product")(x, y).numpy(), x * y)
    dnn = Interaction("dnn", hidden=5)
    assert dnn(x, y).shape == (3, 5)
    assert len(dnn.trainable_variables) == 4
    assert Interaction("dot").trainable_variables == []
    with pytest.raises(ValueError, match="kind"):
        Interaction("attention")


# --------------------------------------------------------------------------------
# Serving signatures
# --------------------------------------------------------------------------------


def test_saved_signatures_round_trip(tmp_path):
    pairwise = tiny_pairwise()
    linear = LinearModel(hash_bits=6)
    linear.lr_weights.assign(tf.random.normal([64, 1]))
    module = serving_module(pairwise, linear)
    signatures = export_signatures(pairwise, linear, SIZE)
    tf.saved_model.save(module, str(tmp_path / "model"), signatures=signatures)
    loaded = tf.saved_model.load(str(tmp_path / "model"))
    assert set(loaded.signatures) == {"sku_embedding", "query_embedding", "lr_score"}

    images = random_images(3)
    got = loaded.signatures["sku_embedding"](image=tf.constant(images))["embedding"]
    np.testing.assert_allclose(got, pairwise.embed_sku(images), atol=1e-5)

    queries = tf.constant(["red shoes", "日本", ""])
    got = loaded.signatures["query_embedding"](query=queries)["embedding"]
    np.testing.assert_allclose(got, pairwise.embed_query(queries), atol=1e-5)

    batch = lr_batch([[1, 2, 0], [3, 4, 5]], [2, 3])
    got = loaded.signatures["lr_score"](**batch)["probability"]
    np.testing.assert_allclose(got, tf.sigmoid(linear(batch)), atol=1e-6)

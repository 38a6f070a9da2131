"""Training input on tiny built tables: pinned live files, shards, stage-1 pairs, batches.

One module fixture generates and builds the tiny inputs (smaller than ``conf/tiny.yaml``
to keep the file quick) and pins ``training_examples``; a second one builds and
materialises the stage-1 pairs. TensorFlow keeps to one intra-op and one inter-op
thread, as a rank would.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:  # another test module already started the TF runtime
    pass

from pyspark.sql import functions as F  # noqa: E402

from adrank.core import layout  # noqa: E402
from adrank.runtime.runs import RunReport  # noqa: E402
from adrank.sample.generate import generate_inputs  # noqa: E402
from adrank.storage import delta
from adrank.tables import run as build  # noqa: E402
from adrank.train import pairs  # noqa: E402
from adrank.train import store as train_store  # noqa: E402
from adrank.train.ranks import input as train_input  # noqa: E402
from adrank.train.ranks.models import PairwiseModel, pairwise_loss, query_tower, sku_tower  # noqa: E402
from conftest import tiny_config  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"),  # petastorm on pyarrow 14
              pytest.mark.filterwarnings("ignore::UnicodeWarning")]
SMALLER = ("sample.num_impressions=2500", "sample.num_skus=80", "sample.num_users=30")
READ_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    """Tiny tables built once; ``training_examples`` pinned at its first version."""
    config = tiny_config(tmp_path_factory.mktemp("input"), *SMALLER)
    generate_inputs(spark, config.sample, config.inputs.root)
    build.build_tables(spark, config, RunReport("build_tables"), None)
    path = layout.table_path(config, layout.TRAINING_EXAMPLES)
    version = delta.pin_version(spark, path)
    return {"config": config, "path": path, "version": version,
            "files": delta.live_files(None, path, version)}


@pytest.fixture(scope="module")
def stage1(spark, built):
    """Pairs of the pinned examples: keys (cached), images joined, materialised and pinned."""
    config = built["config"]
    examples = delta.read_delta(spark, built["path"], built["version"]).cache()
    skus = delta.read_delta(spark, layout.table_path(config, layout.SKU_IMAGES)).cache()
    keys = pairs.stage1_pairs(examples, skus).cache()
    rows, dropped = pairs.with_images(keys, skus)
    path = layout.table_path(config, layout.PAIRS_TRAIN)
    version = train_store.materialise_pairs(spark, rows, path, files_per_kind=2)
    yield {"examples": examples, "skus": skus, "keys": keys, "dropped": dropped,
           "path": path, "version": version}
    for frame in (keys, skus, examples):
        frame.unpersist()


def read_column(files, column, rank=0, size=1, shuffle=False):
    """Values of ``column`` that rank ``rank`` of ``size`` reads."""
    return [row[0] for row in read_columns(files, [column], rank, size, shuffle)]


def read_columns(files, columns, rank=0, size=1, shuffle=False):
    """Rows (tuples of ``columns``) that rank ``rank`` of ``size`` reads in one pass."""
    def body():
        with train_input.shard_rows(files, rank, size, columns, shuffle=shuffle) as rows:
            return [tuple(row[c].numpy() for c in columns) for row in rows]
    return run_with_timeout(body)


def run_with_timeout(body, seconds=READ_TIMEOUT_S):
    """Runs ``body`` in a daemon thread; fails the test instead of hanging."""
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("value", body()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"reader did not finish within {seconds} s"
    return result["value"]


# --------------------------------------------------------------------------------
# A pinned version's live files
# --------------------------------------------------------------------------------


def test_live_files_of_a_pinned_version_read_exactly_its_rows(spark, built):
    path, v = built["path"], built["version"]
    assert delta.live_files(spark, path, v) == built["files"]
    spark.sql(f"DELETE FROM delta.`{path}` WHERE pmod(xxhash64(impression_id), 5) = 0")
    spark.sql(f"UPDATE delta.`{path}` SET position = position + 100 WHERE pmod(xxhash64(impression_id), 5) = 1")
    latest = delta.pin_version(spark, path)
    assert latest == v + 2 and delta.pin_version(None, path, v) == v

    def spark_rows(version):
        frame = delta.read_delta(spark, path, version).select("impression_id", "position")
        return Counter((r.impression_id, r.position) for r in frame.collect())

    def petastorm_rows(files):
        return Counter((i.decode(), int(p)) for i, p in read_columns(files, ["impression_id", "position"]))

    pinned, now = spark_rows(v), spark_rows(latest)
    assert petastorm_rows(built["files"]) == pinned
    assert petastorm_rows(delta.live_files(None, path, latest)) == now
    folder = petastorm_rows(sorted(str(p) for p in Path(path).glob("date=*/*.parquet")))
    gone = pinned - now  # the deleted rows and the old values of the updated ones
    assert gone and all(folder[row] > 0 for row in gone)
    assert sum(folder.values()) > sum(now.values())


def test_pin_version_rejects_an_unknown_version(spark, built):
    with pytest.raises(ValueError, match="not 999"):
        delta.pin_version(spark, built["path"], 999)


def test_live_files_refuse_a_table_with_deletion_vectors(spark, tmp_path):
    path = str(tmp_path / "dv")
    spark.range(10).write.format("delta").option("delta.enableDeletionVectors", "true").save(path)
    with pytest.raises(delta.DeletionVectorsError):
        delta.live_files(None, path, 0)
    with pytest.raises(delta.DeletionVectorsError):
        delta.live_files(spark, path, 0)


# --------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------


def test_two_shards_are_disjoint_cover_everything_and_match_the_footer_counts(built):
    files = built["files"]
    everything = read_column(files, "impression_id")
    # shuffled, with each rank's own seed: the split must not depend on the seed
    shards = [read_column(files, "impression_id", rank, 2, shuffle=True) for rank in range(2)]
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(everything)
    assert list(train_input.plan_shards(files, 2).shard_rows) == [len(s) for s in shards]
    assert sum(train_input.row_group_rows(files)) == len(everything)


def test_more_ranks_than_row_groups_wrap_around_without_hanging(built):
    files = built["files"]
    groups = len(train_input.row_group_rows(files))
    size = groups + 1
    # Petastorm's own split (row group i -> shard i mod size) would leave the last rank empty
    plan = train_input.plan_shards(files, size)
    assert plan.shard_count == groups and plan.shard_of(size - 1) == 0
    last, first = (read_column(files, "impression_id", rank, size) for rank in (size - 1, 0))
    assert last == first and len(last) == plan.shard_rows[plan.shard_of(0)]

    batch = 16
    steps = plan.steps(batch)
    for rank in range(size):  # every rank yields the same number of batches, repeating or not
        assert count_example_batches(files, rank, size, batch, num_epochs=1) == steps
        assert count_example_batches(files, rank, size, batch, num_epochs=None, take=steps + 3) == steps + 3


def count_example_batches(files, rank, size, batch, num_epochs, take=None):
    def body():
        with train_input.example_dataset(files, rank, size, batch, 32, num_epochs=num_epochs) as batches:
            return sum(1 for _ in (batches.take(take) if take else batches))
    return run_with_timeout(body)


def test_a_file_set_without_rows_raises_before_reading(tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"sparse_ids": pa.array([], pa.list_(pa.int64()))}), empty)
    with pytest.raises(train_input.EmptyInputError):
        train_input.plan_shards([str(empty)], 2)
    with pytest.raises(train_input.EmptyInputError):
        with train_input.example_dataset([str(empty)], 0, 2, 4, 32):
            pass


def test_example_batches_have_the_linear_model_shapes(built):
    with train_input.example_dataset(built["files"], 1, 2, 8, 32, num_epochs=1) as batches:
        batch = next(iter(batches))
    assert batch["sparse_ids"].dtype == tf.int64 and batch["sparse_ids"].shape == (8, 32)
    assert batch["num_sparse_ids"].dtype == tf.int32 and batch["num_sparse_ids"].shape == (8,)
    assert batch["label"].dtype == tf.float32 and set(batch["label"].numpy()) <= {0.0, 1.0}


# --------------------------------------------------------------------------------
# Stage-1 pairs
# --------------------------------------------------------------------------------


def test_every_clicked_impression_gets_one_well_chosen_negative(stage1):
    examples, keys = stage1["examples"], stage1["keys"].collect()
    rows = examples.select("page", "context_sku_id", "query", "ad_sku_id", "ad_category_id", "label").collect()
    clicked, shown, category = Counter(), set(), {}
    for r in rows:
        context = r.context_sku_id if r.page == "detail" else r.query
        if r.page in pairs.KINDS and context not in (None, ""):
            shown.add((r.page, context, r.ad_sku_id, r.label))
            clicked[(r.page, context, r.ad_sku_id)] += r.label
        category[r.ad_sku_id] = r.ad_category_id
    catalog_category = {r.sku_id: r.category_id for r in stage1["skus"].select("sku_id", "category_id").collect()}
    assert len(keys) == sum(clicked.values())
    for k in keys:
        context = k.context_sku_id if k.kind == "detail" else k.query
        assert clicked[(k.kind, context, k.pos_sku_id)] > 0
        if k.negative_source == pairs.SHOWN:
            assert (k.kind, context, k.neg_sku_id, 0) in shown
            assert clicked[(k.kind, context, k.neg_sku_id)] == 0
        else:
            assert k.negative_source == pairs.CATALOG
            assert catalog_category[k.neg_sku_id] != category[k.pos_sku_id]
    assert Counter(k.negative_source for k in keys)[pairs.SHOWN] > len(keys) / 2


def test_rows_without_an_image_are_dropped_and_counted(spark, stage1):
    keys = stage1["keys"]
    assert stage1["dropped"] == 0
    removed = {r.pos_sku_id for r in keys.where(F.col("kind") == "detail").limit(3).collect()}
    fewer = stage1["skus"].where(~F.col("sku_id").isin(list(removed)))
    rows, dropped = pairs.with_images(keys, fewer)
    affected = keys.where(F.col("pos_sku_id").isin(list(removed)) | F.col("neg_sku_id").isin(list(removed))
                          | F.col("context_sku_id").isin(list(removed))).count()
    assert dropped == affected > 0
    assert rows.count() + dropped == keys.count()
    assert rows.schema.simpleString() == spark.createDataFrame([], pairs.PAIRS_DDL).schema.simpleString()


# --------------------------------------------------------------------------------
# Pair batches and one model step
# --------------------------------------------------------------------------------


def pair_files(stage1, kind):
    return delta.live_files(None, stage1["path"], stage1["version"], {train_store.PAIRS_PARTITION: kind})


def first_pair_batch(stage1, kind, batch_size, image_size):
    def body():
        with train_input.pair_dataset(pair_files(stage1, kind), 0, 2, batch_size, image_size, kind) as batches:
            return next(iter(batches))
    return run_with_timeout(body)


def test_pair_batches_feed_a_pairwise_model_step(built, stage1):
    size, batch_size = built["config"].features.image_size, 8
    detail = first_pair_batch(stage1, "detail", batch_size, size)
    search = first_pair_batch(stage1, "search", batch_size, size)
    assert sorted(detail) == ["context_image", "neg_image", "pos_image"]
    assert sorted(search) == ["neg_image", "pos_image", "query"]
    for name in ("context_image", "pos_image", "neg_image"):
        assert detail[name].dtype == tf.uint8 and detail[name].shape == (batch_size, size, size, 3)
    assert search["query"].dtype == tf.string and search["query"].shape == (batch_size,)
    assert all(q for q in search["query"].numpy())

    tf.keras.utils.set_random_seed(0)
    model = PairwiseModel(sku_tower("mini_inception", size, 8, width=4), query_tower(8, width=4))
    optimizer = tf.keras.optimizers.legacy.RMSprop(1e-3)
    for batch in (detail, search):
        with tf.GradientTape() as tape:
            loss = pairwise_loss(*model(batch, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, model.trainable_variables) if g is not None])
        assert np.isfinite(loss.numpy())


def test_stored_pair_images_are_the_catalog_bytes(stage1):
    files = pair_files(stage1, "search")
    table = pq.read_table(files[0].removeprefix("file://"), columns=["pos_sku_id", "pos_image"]).slice(0, 1)
    sku, png = table["pos_sku_id"][0].as_py(), table["pos_image"][0].as_py()
    stored = stage1["skus"].where(F.col("sku_id") == sku).select("image").first().image
    assert png == bytes(stored)


def test_a_pair_dataset_refuses_files_of_mixed_kinds(stage1):
    everything = delta.live_files(None, stage1["path"], stage1["version"])
    with pytest.raises(ValueError, match="another kind"):
        with train_input.pair_dataset(everything, 0, 1, 4, 64, "detail"):
            pass

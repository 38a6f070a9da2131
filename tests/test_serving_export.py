"""Serving export: versioned snapshots of sku_embeddings, pointer swap, pruning, bad input."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import time

import numpy as np
import pytest
from pyspark.sql.types import ArrayType, FloatType, IntegerType, LongType, StringType, StructField, StructType

from adrank import versioned
from adrank.embed import serving
from adrank.embed.serving import load_serving_snapshot, publish_serving_snapshot

SCHEMA = StructType([
    StructField("sku_id", LongType()), StructField("image_hash", StringType()),
    StructField("model_version", IntegerType()), StructField("embedding", ArrayType(FloatType())),
    StructField("updated_at", StringType()),
])
WHEN = datetime.datetime(2026, 11, 30, tzinfo=datetime.UTC).isoformat()


@pytest.fixture(autouse=True)
def small_partitions(monkeypatch):
    """About 16 rows per streamed range partition (dim 6), so a few dozen rows span several."""
    monkeypatch.setattr(serving, "PARTITION_BYTES", 16 * (8 + 4 * 6))


def embeddings_frame(spark, vectors: dict[int, list[float] | None], seed: int = 0):
    """A sku_embeddings-shaped DataFrame of ``vectors`` in shuffled order over 3 partitions."""
    ids = list(vectors)
    np.random.default_rng(seed).shuffle(ids)
    rows = [(i, f"hash-{i}", 1, vectors[i], WHEN) for i in ids]
    return spark.createDataFrame(rows, SCHEMA).repartition(3)


def random_vectors(ids, dim: int, seed: int = 0) -> dict[int, list[float]]:
    """float32-exact vectors per id."""
    values = np.random.default_rng(seed).standard_normal((len(ids), dim)).astype(np.float32)
    return {int(i): values[k].tolist() for k, i in enumerate(ids)}


def publish(spark, vectors, root, seed: int = 0, **kwargs):
    kwargs = {"table_version": 7, "model_version": 2, **kwargs}
    return publish_serving_snapshot(spark, embeddings_frame(spark, vectors, seed), str(root), **kwargs)


def listing(root) -> list[str]:
    return sorted(os.listdir(root))


def test_snapshot_matches_the_table_exactly(spark, tmp_path, monkeypatch):
    ids = np.random.default_rng(1).choice(10_000, size=40, replace=False)
    vectors = random_vectors(ids, 6)
    chunks: list[int] = []
    write_arrays = serving._write_arrays

    def counting(stream, *args):
        return write_arrays((chunks.append(len(c[0])) or c for c in stream), *args)

    monkeypatch.setattr(serving, "_write_arrays", counting)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "3")
    try:
        result = publish(spark, vectors, tmp_path / "serving")
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")

    snapshot = load_serving_snapshot(tmp_path / "serving", verify=True)
    folder = tmp_path / "serving" / "v1"
    assert result == {"snapshot_version": 1, "path": str(folder), "rows": 40, "dim": 6}
    assert len(chunks) >= 6 and sum(chunks) == 40  # streamed in pieces, not collected whole
    assert (tmp_path / "serving" / "CURRENT").read_text() == "v1\n"
    assert snapshot.version == 1 and snapshot.dim == 6 and len(snapshot) == 40
    assert snapshot.sku_ids.dtype == np.int64 and snapshot.embeddings.dtype == np.float32
    np.testing.assert_array_equal(snapshot.sku_ids, np.sort(ids))
    np.testing.assert_array_equal(snapshot.embeddings,
                                  np.array([vectors[i] for i in sorted(vectors)], dtype=np.float32))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest == snapshot.manifest
    assert {k: manifest[k] for k in ("snapshot_version", "table_version", "model_version", "rows", "dim")} \
        == {"snapshot_version": 1, "table_version": 7, "model_version": 2, "rows": 40, "dim": 6}
    assert datetime.datetime.fromisoformat(manifest["created_at"]).utcoffset() == datetime.timedelta(0)
    for name in ("sku_ids.npy", "embeddings.npy"):
        assert manifest["files"][name]["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    assert isinstance(np.load(folder / "embeddings.npy", mmap_mode="r"), np.memmap)


def test_pointer_moves_and_keep_prunes_old_versions(spark, tmp_path):
    for seed in range(3):
        result = publish(spark, random_vectors(range(10), 4, seed), tmp_path, seed=seed, keep=2)
        assert result["snapshot_version"] == seed + 1
        assert (tmp_path / "CURRENT").read_text() == f"v{seed + 1}\n"

    assert [p for p in listing(tmp_path) if not p.startswith(".")] == ["CURRENT", "v2", "v3"]
    current = load_serving_snapshot(tmp_path)
    assert current.version == 3
    np.testing.assert_array_equal(current.embeddings[0], random_vectors(range(10), 4, 2)[0])
    assert load_serving_snapshot(tmp_path, version=2).version == 2
    with pytest.raises(FileNotFoundError, match=r"^serving snapshot v1 in .* is missing"):
        load_serving_snapshot(tmp_path, version=1)


def test_prune_never_deletes_the_current_version(tmp_path):
    for version in (1, 2, 3, 4):
        (tmp_path / f"v{version}").mkdir()
    (tmp_path / "CURRENT").write_text("v1\n")

    serving._prune(tmp_path, keep=2)

    assert listing(tmp_path) == ["CURRENT", "v1", "v3", "v4"]


def test_pointer_never_moves_back_to_an_older_version(tmp_path):
    (tmp_path / "CURRENT").write_text("v5\n")
    serving._advance_pointer(tmp_path, 4)  # a slower publisher finishing after v5 went live
    assert (tmp_path / "CURRENT").read_text() == "v5\n"
    serving._advance_pointer(tmp_path, 6)
    assert (tmp_path / "CURRENT").read_text() == "v6\n"


def test_a_loaded_reader_keeps_working_after_the_next_publish(spark, tmp_path):
    first, second = random_vectors(range(12), 5, 0), random_vectors(range(6, 20), 5, 1)
    publish(spark, first, tmp_path, keep=1)
    old = load_serving_snapshot(tmp_path)

    publish(spark, second, tmp_path, seed=1, keep=1)

    assert not (tmp_path / "v1").exists()  # pruned while mapped
    np.testing.assert_array_equal(old.sku_ids, np.arange(12))
    np.testing.assert_array_equal(old.lookup([0, 11]), np.array([first[0], first[11]], dtype=np.float32))
    new = load_serving_snapshot(tmp_path)
    assert new.version == 2
    np.testing.assert_array_equal(new.lookup([19, 6]), np.array([second[19], second[6]], dtype=np.float32))


def test_an_empty_table_publishes_a_valid_zero_row_snapshot(spark, tmp_path):
    result = publish_serving_snapshot(spark, spark.createDataFrame([], SCHEMA), str(tmp_path),
                                      table_version=0, model_version=1)

    snapshot = load_serving_snapshot(tmp_path, verify=True)
    assert result == {"snapshot_version": 1, "path": str(tmp_path / "v1"), "rows": 0, "dim": 0}
    assert snapshot.sku_ids.shape == (0,) and snapshot.embeddings.shape == (0, 0)
    with pytest.raises(KeyError, match="1 sku_id"):
        snapshot.lookup([1])


@pytest.fixture(scope="module")
def live_root(spark, tmp_path_factory):
    """A root with one good published snapshot (v1)."""
    root = tmp_path_factory.mktemp("live")
    publish(spark, random_vectors(range(8), 4), root)
    return root


def test_lookup_returns_rows_in_request_order_and_names_missing_ids(live_root):
    vectors = random_vectors(range(8), 4)
    snapshot = load_serving_snapshot(live_root)

    np.testing.assert_array_equal(snapshot.lookup([7, 3, 7]),
                                  np.array([vectors[7], vectors[3], vectors[7]], dtype=np.float32))
    assert snapshot.lookup(np.array([], dtype=np.int64)).shape == (0, 4)
    with pytest.raises(KeyError, match=r"2 sku_id\(s\) not in serving snapshot v1: -1, 12"):
        snapshot.lookup([3, 12, -1])


@pytest.mark.parametrize("pairs, message", [
    ([(1, [1.0, 2.0]), (2, [3.0, 4.0]), (3, [5.0, 6.0]), (2, [7.0, 8.0])],
     r"duplicate sku_id 2$"),
    ([(1, [1.0, 2.0]), (2, [3.0, 4.0, 5.0]), (3, [5.0, 6.0])], r"embedding lengths differ \(2 to 3\)"),
    ([(1, [1.0, 2.0]), (2, None), (3, [5.0, 6.0])], r"1 row\(s\) with null embedding \(e\.g\. sku_id 2\)"),
    ([(1, [1.0, None]), (2, [3.0, 4.0])], r"1 row\(s\) with null value in embedding \(e\.g\. sku_id 1\)"),
    ([(1, [1.0, 2.0]), (2, [float("nan"), 4.0])], r"1 row\(s\) with non-finite value in embedding"),
    ([(1, []), (2, [])], r"embeddings are empty"),
], ids=["duplicate", "ragged", "null", "null-value", "nan", "empty-vectors"])
def test_bad_input_is_a_one_line_error_and_publishes_nothing(spark, live_root, pairs, message):
    before = listing(live_root)
    frame = spark.createDataFrame([(i, "h", 1, v, WHEN) for i, v in pairs], SCHEMA).repartition(2)

    with pytest.raises(ValueError, match="^cannot publish serving snapshot: .*" + message) as caught:
        publish_serving_snapshot(spark, frame, str(live_root), table_version=8, model_version=2)

    assert "\n" not in str(caught.value)
    assert listing(live_root) == before
    assert (live_root / "CURRENT").read_text() == "v1\n"


def test_missing_columns_and_remote_roots_are_refused(spark, tmp_path):
    frame = spark.createDataFrame([(1, "h")], "sku_id long, image_hash string")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['embedding'\]"):
        publish_serving_snapshot(spark, frame, str(tmp_path), table_version=1, model_version=1)
    with pytest.raises(ValueError, match="only local paths are supported"):
        publish(spark, random_vectors(range(2), 4), "s3a://bucket/serving")
    assert listing(tmp_path) == []


def test_half_written_temporaries_are_ignored_and_stale_ones_removed(spark, tmp_path):
    crashed = tmp_path / ".tmp-crashed"  # a publisher killed mid-write: a v9 it never renamed
    crashed.mkdir()
    (crashed / "manifest.json").write_text('{"snapshot_version": 9}')
    (crashed / "embeddings.npy").write_bytes(b"\x93NUMPY half")
    fresh = tmp_path / ".tmp-writing"  # another publisher still writing
    fresh.mkdir()
    old = time.time() - serving.STALE_TEMPORARY_SECONDS - 60
    os.utime(crashed, (old, old))

    result = publish(spark, random_vectors(range(5), 4), tmp_path)

    assert result["snapshot_version"] == 1
    assert load_serving_snapshot(tmp_path).version == 1
    assert not crashed.exists() and fresh.exists()
    assert [p for p in listing(tmp_path) if not p.startswith(".")] == ["CURRENT", "v1"]


def test_a_racing_publisher_takes_the_next_number_without_overwriting(spark, tmp_path, monkeypatch):
    publish(spark, random_vectors(range(5), 4), tmp_path)
    first = (tmp_path / "v1" / "embeddings.npy").read_bytes()
    versions = versioned.versions_in
    calls = iter([[]])  # the first scan misses v1, as if it were renamed just after the scan
    monkeypatch.setattr(versioned, "versions_in", lambda root: next(calls, None) or versions(root))

    result = publish(spark, random_vectors(range(5), 4, seed=3), tmp_path, seed=3)

    assert result["snapshot_version"] == 2
    assert (tmp_path / "v1" / "embeddings.npy").read_bytes() == first
    assert load_serving_snapshot(tmp_path).manifest["snapshot_version"] == 2


def corrupt_truncated(folder):
    data = (folder / "embeddings.npy").read_bytes()
    (folder / "embeddings.npy").write_bytes(data[:-8])


def corrupt_manifest_rows(folder):
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "rows": 4}))


def corrupt_manifest_json(folder):
    (folder / "manifest.json").write_text("{not json")


@pytest.mark.parametrize("corrupt, message", [
    (corrupt_truncated, "mmap length"),
    (corrupt_manifest_rows, "manifest says version 1, rows 4"),
    (corrupt_manifest_json, "Expecting property name"),
])
def test_a_corrupt_snapshot_is_a_one_line_error(live_root, tmp_path, corrupt, message):
    root = tmp_path / "copy"
    shutil.copytree(live_root, root)
    corrupt(root / "v1")

    with pytest.raises(ValueError, match=rf"^serving snapshot {root / 'v1'} is corrupt: .*{message}") as caught:
        load_serving_snapshot(root)
    assert "\n" not in str(caught.value)


def test_checksums_are_verified_on_request_and_missing_roots_are_named(live_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(live_root, root)
    path = root / "v1" / "embeddings.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))

    assert load_serving_snapshot(root).version == 1  # shapes still agree
    with pytest.raises(ValueError, match="sha256 of embeddings.npy does not match"):
        load_serving_snapshot(root, verify=True)
    with pytest.raises(FileNotFoundError, match=r"^no serving snapshot in .*nowhere \(no CURRENT file\)$"):
        load_serving_snapshot(tmp_path / "nowhere")


def test_the_stream_writer_catches_duplicates_across_chunks_and_changed_row_counts(tmp_path):
    chunk = (np.array([1, 2], dtype=np.int64), np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="^cannot publish serving snapshot: duplicate sku_id 2$"):
        serving._write_arrays([chunk, (np.array([2, 3]), np.ones((2, 3), np.float32))], tmp_path, 4, 3)
    with pytest.raises(ValueError, match="streamed 2 rows, counted 3"):
        serving._write_arrays([chunk], tmp_path, 3, 3)
    with pytest.raises(ValueError, match="more than the 1 rows counted"):
        serving._write_arrays([chunk], tmp_path, 1, 3)

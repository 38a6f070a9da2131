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

from adrank.embed import export, serving
from adrank.embed.export import publish_serving_snapshot
from adrank.embed.serving import load_serving_snapshot
from adrank.storage import versioned

SCHEMA = StructType([
    StructField("sku_id", LongType()), StructField("image_hash", StringType()),
    StructField("model_version", IntegerType()), StructField("embedding", ArrayType(FloatType())),
    StructField("updated_at", StringType()),
])
WHEN = datetime.datetime(2026, 11, 30, tzinfo=datetime.UTC).isoformat()


@pytest.fixture(autouse=True)
def small_partitions(monkeypatch):
    """About 16 rows per streamed range partition (dim 6), so a few dozen rows span several."""
    monkeypatch.setattr(export, "PARTITION_BYTES", 16 * (8 + 4 * 6))


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
    write_arrays = serving.write_arrays

    def counting(stream, *args):
        return write_arrays((chunks.append(len(c[0])) or c for c in stream), *args)

    monkeypatch.setattr(serving, "write_arrays", counting)
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

    versioned.prune(tmp_path, serving.SNAPSHOTS, keep=2)

    assert listing(tmp_path) == ["CURRENT", "v1", "v3", "v4"]


def test_pointer_never_moves_back_to_an_older_version(tmp_path):
    (tmp_path / "CURRENT").write_text("v5\n")
    versioned.advance_pointer(tmp_path / "CURRENT", 4)  # a slower publisher finishing after v5 went live
    assert (tmp_path / "CURRENT").read_text() == "v5\n"
    versioned.advance_pointer(tmp_path / "CURRENT", 6)
    assert (tmp_path / "CURRENT").read_text() == "v6\n"


def test_a_scheme_without_a_lock_keeps_every_version_and_leaves_no_hidden_file(tmp_path):
    scheme = versioned.Scheme(pointer="latest", manifest="metadata.json", version_key="version", lock=None)
    for n in range(3):
        assert versioned.publish(tmp_path, scheme, lambda folder, n=n: {"n": n}) == n + 1

    assert listing(tmp_path) == ["latest", "v1", "v2", "v3"]
    assert (tmp_path / "latest").read_text() == "v3\n"
    assert json.loads((tmp_path / "v2" / "metadata.json").read_text()) == {"n": 1, "version": 2}
    with pytest.raises(ValueError, match="pruning needs a lock"):
        versioned.publish(tmp_path, scheme, lambda folder: {}, keep=2)
    assert listing(tmp_path) == ["latest", "v1", "v2", "v3"]


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
    old = time.time() - versioned.STALE_TEMPORARY_SECONDS - 60
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
        serving.write_arrays([chunk, (np.array([2, 3]), np.ones((2, 3), np.float32))], tmp_path, 4, 3)
    with pytest.raises(ValueError, match="streamed 2 rows, counted 3"):
        serving.write_arrays([chunk], tmp_path, 3, 3)
    with pytest.raises(ValueError, match="more than the 1 rows counted"):
        serving.write_arrays([chunk], tmp_path, 1, 3)


# ---------------------------------------------------------------------------- patch

CHANGES_DDL = "sku_id long, image_hash string, embedding array<float>, op string"


def changes_frame(spark, upserts: dict[int, list[float] | None], deletes=(), extra=(), seed: int = 0):
    """Staged-rows-shaped changes (delete rows carry only sku_id) in shuffled order over 3 partitions."""
    rows = ([(i, f"hash-{i}", v, "upsert") for i, v in upserts.items()]
            + [(i, None, None, "delete") for i in deletes] + list(extra))
    np.random.default_rng(seed).shuffle(rows)
    return spark.createDataFrame(rows, CHANGES_DDL).repartition(3)


def applied(vectors: dict, upserts: dict, deletes=()) -> dict[int, list[float]]:
    """The table after the changes."""
    table = {**vectors, **upserts}
    for i in deletes:
        table.pop(i, None)
    return table


def patch(spark, root, upserts, deletes=(), base_version: int = 1, **kwargs):
    kwargs = {"table_version": 8, "model_version": 2, "base_version": base_version, **kwargs}
    return export.patch_serving_snapshot(spark, changes_frame(spark, upserts, deletes), str(root), **kwargs)


def assert_snapshot(snapshot, table: dict) -> None:
    ids = sorted(table)
    assert snapshot.sku_ids.tolist() == ids
    expected = np.array([table[i] for i in ids], dtype=np.float32).reshape(len(ids), snapshot.dim)
    np.testing.assert_array_equal(snapshot.embeddings, expected)


@pytest.fixture
def tiny_chunks(spark, monkeypatch):
    """Blocks of 4 base rows (dim 6), Arrow batches of 2 rows: every patch spans many chunks."""
    monkeypatch.setattr(serving, "BLOCK_BYTES", 4 * (8 + 4 * 6))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "2")
    yield
    spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")


def test_a_patch_equals_a_full_publish_of_the_resulting_table(spark, tmp_path, monkeypatch, tiny_chunks):
    ids = np.random.default_rng(1).choice(np.arange(100, 10_000), size=40, replace=False)
    vectors = random_vectors(ids, 6)
    publish(spark, vectors, tmp_path / "patched")
    ordered = sorted(vectors)
    updates = random_vectors(ordered[3:30:6], 6, seed=5)
    inserts = random_vectors([-7, 0, 99, ordered[10] + 1, 20_000, 2**40], 6, seed=6)  # below, between, above all
    deletes = [ordered[0], ordered[17], ordered[-1], 15_000]  # both ends, and one the base lacks
    table = applied(vectors, {**updates, **inserts}, deletes)
    chunks: list[int] = []
    stream_changes = export.stream_changes
    monkeypatch.setattr(export, "stream_changes",
                        lambda *a: (chunks.append(len(c)) or c for c in stream_changes(*a)))

    result = patch(spark, tmp_path / "patched", {**updates, **inserts}, deletes, expected_rows=len(table))
    publish(spark, table, tmp_path / "full", table_version=8)

    patched = load_serving_snapshot(tmp_path / "patched", verify=True)
    full = load_serving_snapshot(tmp_path / "full", verify=True)
    assert result == {"snapshot_version": 2, "path": str(tmp_path / "patched" / "v2"), "rows": len(table),
                      "dim": 6, "patched_from": 1}
    assert len(chunks) >= 6 and sum(chunks) == len(updates) + len(inserts) + len(deletes)
    assert (tmp_path / "patched" / "CURRENT").read_text() == "v2\n"
    assert_snapshot(patched, table)
    np.testing.assert_array_equal(patched.sku_ids, full.sku_ids)
    np.testing.assert_array_equal(patched.embeddings, full.embeddings)
    different = {"snapshot_version", "created_at", "patched_from"}
    assert {k: v for k, v in patched.manifest.items() if k not in different} == \
        {k: v for k, v in full.manifest.items() if k not in different}  # same files, same sha256
    assert (patched.manifest["patched_from"], full.manifest["patched_from"]) == (1, None)


BASE = random_vectors(range(10, 301, 10), 6)


@pytest.fixture(scope="module")
def base_root(spark, tmp_path_factory):
    """v1: :data:`BASE` (ids 10, 20, ..., 300, dim 6)."""
    root = tmp_path_factory.mktemp("base")
    publish(spark, BASE, root)
    return root


@pytest.mark.parametrize("upserts, deletes", [
    (random_vectors([-5, 1, 9], 6, 7), []),                              # all below the base
    (random_vectors([301, 10**12], 6, 7), []),                           # all above the base
    (random_vectors([10, 300], 6, 7), [20, 290]),                        # updates and deletes at both ends
    ({}, list(range(10, 301, 10))),                                      # everything deleted
    ({}, []),                                                            # nothing changed: a copy
    (random_vectors(range(5, 400, 7), 6, 8), [i for i in range(20, 300, 30) if (i - 5) % 7]),  # many
], ids=["below", "above", "ends", "all-deleted", "no-changes", "many"])
def test_a_patch_applies_changes_anywhere_in_the_id_range(spark, base_root, tmp_path, tiny_chunks,
                                                         upserts, deletes):
    root = tmp_path / "root"
    shutil.copytree(base_root, root)
    table = applied(BASE, upserts, deletes)

    result = patch(spark, root, upserts, deletes, expected_rows=len(table),
                   change_rows=len(upserts) + len(deletes))

    snapshot = load_serving_snapshot(root, verify=True)
    assert (result["snapshot_version"], result["patched_from"], result["rows"]) == (2, 1, len(table))
    assert snapshot.dim == (6 if table else 0)  # an empty result has dim 0, as a full publish would
    assert_snapshot(snapshot, table)


def test_patched_blocks_merge_in_bounded_pieces():
    """The two-way merge on its own: random bases and changes, any block and chunk size."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        ids = np.sort(rng.choice(200, int(rng.integers(1, 40)), replace=False)).astype(np.int64) - 50
        base = serving.ServingSnapshot(1, ids, rng.standard_normal((len(ids), 3)).astype(np.float32), {})
        changed = np.sort(rng.choice(np.arange(-60, 160), int(rng.integers(0, 30)), replace=False))
        upserts = rng.random(len(changed)) < 0.6
        vectors = rng.standard_normal((int(upserts.sum()), 3)).astype(np.float32)
        every = serving.Changes(changed.astype(np.int64), upserts, vectors)
        chunk, block = int(rng.integers(1, 6)), int(rng.integers(1, 8))
        chunks = [every.rows(i, i + chunk) for i in range(0, len(every), chunk)]
        table = applied(dict(zip(ids.tolist(), base.embeddings)),
                        dict(zip(changed[upserts].tolist(), vectors)), changed[~upserts].tolist())

        pieces = list(serving.patched_blocks(base, chunks, block))

        assert all(len(p[0]) <= block + chunk for p in pieces)  # one base block plus one chunk at most
        merged_ids = np.concatenate([p[0] for p in pieces]) if pieces else np.zeros(0, np.int64)
        assert merged_ids.tolist() == sorted(table)
        if table:
            np.testing.assert_array_equal(np.concatenate([p[1] for p in pieces]),
                                          np.array([table[i] for i in sorted(table)]))


@pytest.mark.parametrize("changes, expected_rows, message", [
    ({"upserts": {7: [1.0] * 5}}, 31, r"changes to v1: embedding length 5, not the snapshot's dim 6 \(e\.g\. sku_id 7\)$"),
    ({"upserts": {7: [1.0] * 6}}, 32, r"streamed 31 rows, expected 32 \(v1 with the changes applied\)$"),
    ({"upserts": {7: [1.0] * 6}}, 30, r"more than the 30 rows expected \(v1 with the changes applied\)$"),
    ({"upserts": {7: [1.0] * 6}, "deletes": [7]}, 30, r"duplicate sku_id 7$"),
    ({"upserts": {7: [1.0] * 5 + [float("inf")]}}, 31, r"non-finite value in embedding \(e\.g\. sku_id 7\)$"),
    ({"upserts": {7: None}}, 31, r"null embedding \(e\.g\. sku_id 7\)$"),
    ({"extra": [(7, None, [1.0] * 6, "merge")]}, 31, r"op neither upsert nor delete \(e\.g\. sku_id 7\)$"),
], ids=["dim", "too-few", "too-many", "duplicate", "inf", "null", "op"])
def test_bad_changes_or_row_counts_are_a_one_line_error_and_publish_nothing(spark, base_root, changes,
                                                                            expected_rows, message):
    before = listing(base_root)
    frame = changes_frame(spark, changes.get("upserts", {}), changes.get("deletes", ()), changes.get("extra", ()))

    with pytest.raises(ValueError, match="^cannot publish serving snapshot: .*" + message) as caught:
        export.patch_serving_snapshot(spark, frame, str(base_root), base_version=1, table_version=8,
                                       model_version=2, expected_rows=expected_rows)

    assert "\n" not in str(caught.value)
    assert listing(base_root) == before
    assert (base_root / "CURRENT").read_text() == "v1\n"


def test_a_missing_empty_or_damaged_base_is_refused(spark, base_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="serving snapshot v5 .* is missing"):
        patch(spark, base_root, {}, base_version=5, expected_rows=30)
    publish_serving_snapshot(spark, spark.createDataFrame([], SCHEMA), str(tmp_path), table_version=0,
                             model_version=1)
    with pytest.raises(ValueError, match="v1 is empty, nothing to patch"):
        patch(spark, tmp_path, random_vectors([1], 6), expected_rows=1)
    damaged = tmp_path / "damaged"
    shutil.copytree(base_root, damaged)
    data = bytearray((damaged / "v1" / "embeddings.npy").read_bytes())
    data[-1] ^= 0xFF
    (damaged / "v1" / "embeddings.npy").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 of embeddings.npy does not match"):
        patch(spark, damaged, {}, expected_rows=30)
    assert [p for p in listing(damaged) if not p.startswith(".")] == ["CURRENT", "v1"]

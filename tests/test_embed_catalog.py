"""embed_catalog: incremental MERGE of exactly the changed SKUs, crash safety, model changes,
the Change Data Feed fallback, the serving snapshot, and its one-line errors.

Real Spark, Delta and TensorFlow: a freshly built (untrained) stage-1 model is exported
through the model registry, and ``sku_images`` is written by ``upsert_sku_images``, as
``build_tables`` does. One scenario (module fixture) runs the job several times and
records the table after each run; the tests read those records.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from adrank.core import layout
from adrank.core.config import ConfigError
from adrank.core.layout import registry_root, serving_root
from adrank.embed.run import EmbedError, Merge, can_patch, choose_mode, embed_catalog
from adrank.embed.store import Processed, ensure_table, last_processed, record_without_rows
from adrank.runtime.runs import RunReport
from adrank.storage import delta
from adrank.tables import store as build_store
from conftest import TINY_CONF, load_job, tiny_config

SIZE = 32  # features.image_size of conf/tiny.yaml
T0 = dt.datetime(2026, 11, 1, 12, 0)
SKU_IMAGES_DDL = ("sku_id long, title string, image binary, image_format string, height int, width int, "
                  "channels int, image_hash string, updated_at timestamp, category_id int")


class Crash(RuntimeError):
    """Raised by the test hook between embedding and commit."""


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def upsert(spark, config, catalog: dict[int, tuple[int, str]], full_snapshot: bool = True) -> int:
    """MERGE ``{sku_id: (image seed, title)}`` into sku_images; return the version written."""
    rows = [(sku, title, png(seed), "PNG", SIZE, SIZE, 3, hashlib.sha256(png(seed)).hexdigest(), T0, 1)
            for sku, (seed, title) in catalog.items()]
    frame = spark.createDataFrame(rows, SKU_IMAGES_DDL)
    path = layout.table_path(config, layout.SKU_IMAGES)
    return build_store.upsert_sku_images(spark, frame, path, {"run_id": "test"}, full_snapshot)["version"]


def register_model(config, seed: int) -> int:
    """Export a freshly built real PairwiseModel (seeded) as the next ``pairwise`` version."""
    import tensorflow as tf

    from adrank.train.ranks.models import PairwiseModel, sku_tower
    from adrank.train.registry import export_model

    tf.keras.utils.set_random_seed(seed)
    model = PairwiseModel(sku_tower("mini_inception", SIZE, config.train.embedding_dim, config.train.tower_width))
    version, _ = export_model(registry_root(config), "pairwise", pairwise_model=model, image_size=SIZE,
                              data_version=0, run_id=f"seed-{seed}")
    return version


def run(spark, config, **kwargs) -> dict[str, Any]:
    report = RunReport("embed_catalog")
    return json.loads(json.dumps(embed_catalog(spark, config, report, **kwargs).as_json()["embed_catalog"], default=str))


def table(spark, config) -> dict[int, tuple]:
    """sku_embeddings as ``{sku_id: (image_hash, model_version, embedding, updated_at)}``."""
    rows = delta.read_delta(spark, layout.table_path(config, layout.SKU_EMBEDDINGS)).collect()
    ids = [r.sku_id for r in rows]
    assert len(ids) == len(set(ids)), f"a SKU is embedded more than once: {sorted(ids)}"
    return {r.sku_id: (r.image_hash, r.model_version, tuple(r.embedding), r.updated_at) for r in rows}


@functools.cache
def embedder(model_path: str):
    from adrank.embed.udf import load_embedder

    return load_embedder(model_path, threads=1)


def direct_embeddings(config, seeds: dict[int, int], model_version: int) -> dict[int, np.ndarray]:
    """The registered model run in this process on each SKU's image (the expected values)."""
    embed = embedder(str(Path(registry_root(config)) / "pairwise" / f"v{model_version}"))
    ids = sorted(seeds)
    values = embed(np.array([png(seeds[i]) for i in ids], dtype=object))
    return dict(zip(ids, values))


def assert_current(state: dict[int, tuple], config, seeds: dict[int, int], model_version: int) -> None:
    """Exactly the catalog's SKUs, each with the embedding of its current image and model."""
    assert sorted(state) == sorted(seeds)
    expected = direct_embeddings(config, seeds, model_version)
    for sku, (image_hash, version, embedding, _) in state.items():
        assert image_hash == hashlib.sha256(png(seeds[sku])).hexdigest(), sku
        assert version == model_version, sku
        np.testing.assert_allclose(embedding, expected[sku], rtol=1e-4, atol=1e-5, err_msg=f"sku {sku}")


def current_snapshot(config) -> dict[str, Any]:
    """The serving snapshot ``CURRENT`` names, copied out of its files (sha256 checked)."""
    from adrank.embed.serving import load_serving_snapshot

    snapshot = load_serving_snapshot(serving_root(config), verify=True)
    return {"version": snapshot.version, "manifest": snapshot.manifest, "sku_ids": snapshot.sku_ids.tolist(),
            "embeddings": np.array(snapshot.embeddings)}


def damage_current_snapshot(config) -> None:
    """Flip the last byte of the current snapshot's embeddings (its sha256 no longer matches)."""
    root = Path(serving_root(config))
    path = root / (root / "CURRENT").read_text().strip() / "embeddings.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def scenario(spark, tmp_path_factory) -> dict[str, Any]:
    """Full run; changes; a crash and its rerun (its snapshot base damaged); a no-op; a title-only
    change; a new model; a range without change data."""
    config = tiny_config(tmp_path_factory.mktemp("embed"), "embed.batch_size=4")
    out: dict[str, Any] = {"config": config, "model_v1": register_model(config, seed=1)}
    seeds = {sku: sku for sku in range(1, 9)}
    upsert(spark, config, {sku: (seed, f"t{sku}") for sku, seed in seeds.items()})
    out["first"], out["table_first"] = run(spark, config), table(spark, config)

    # SKU 2 new image, 3 new title only, 4 deleted, 9 new; then SKU 5 changes twice.
    seeds2 = {**{k: v for k, v in seeds.items() if k != 4}, 2: 102, 9: 9, 5: 205}
    upsert(spark, config, {sku: (seed, "new" if sku == 3 else f"t{sku}")
                           for sku, seed in {**seeds2, 5: 105}.items()})
    upsert(spark, config, {5: (205, "t5")}, full_snapshot=False)
    out["second"], out["table_second"], out["seeds_second"] = run(spark, config), table(spark, config), seeds2
    out["snapshot_second"] = current_snapshot(config)

    seeds3 = {**seeds2, 6: 106}
    upsert(spark, config, {sku: (seed, "new" if sku == 3 else f"t{sku}") for sku, seed in seeds3.items()})
    with pytest.raises(Crash):
        run(spark, config, before_commit=lambda: (_ for _ in ()).throw(Crash("killed before commit")))
    out["table_crashed"] = table(spark, config)
    damage_current_snapshot(config)  # the rerun cannot patch it: it publishes the whole table
    out["rerun"], out["table_rerun"], out["seeds_rerun"] = run(spark, config), table(spark, config), seeds3

    out["noop"] = run(spark, config)
    upsert(spark, config, {sku: (seed, "renamed") for sku, seed in seeds3.items()})
    out["titles"], out["table_titles"] = run(spark, config), table(spark, config)
    out["snapshot_titles"] = current_snapshot(config)

    out["model_v2"] = register_model(config, seed=2)
    out["new_model"], out["table_new_model"] = run(spark, config), table(spark, config)

    # A version without change data in the range: 2 new image, 7 deleted, 10 new.
    seeds4 = {**{k: v for k, v in seeds3.items() if k != 7}, 2: 302, 10: 10}
    path = layout.table_path(config, layout.SKU_IMAGES)
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES (delta.enableChangeDataFeed = false)")
    upsert(spark, config, {sku: (seed, "renamed") for sku, seed in seeds4.items()})
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES (delta.enableChangeDataFeed = true)")
    out["fallback"], out["table_fallback"], out["seeds_fallback"] = run(spark, config), table(spark, config), seeds4
    return out


def test_first_run_is_full_and_embeds_every_sku_with_the_registered_model(scenario):
    first = scenario["first"]
    assert (first["mode"], first["reason"], first["model_version"]) == ("full", "first run", 1)
    assert (first["skus_embedded"], first["skus_deleted"], first["skus_unchanged"]) == (8, 0, 0)
    assert first["sku_images"] == {"from_version": None, "to_version": 1, "previous_source_version": None}
    assert_current(scenario["table_first"], scenario["config"], {s: s for s in range(1, 9)}, 1)


def test_incremental_run_rewrites_exactly_the_changed_skus_and_leaves_the_rest_byte_identical(scenario):
    second, before, after = scenario["second"], scenario["table_first"], scenario["table_second"]
    assert (second["mode"], second["sku_images"]["from_version"], second["sku_images"]["to_version"]) == (
        "incremental", 2, 3)
    assert (second["skus_embedded"], second["skus_deleted"], second["skus_unchanged"]) == (3, 1, 5)
    assert second["rows_staged"] == 4  # upserts of 2, 5 and 9, the delete of 4: 3's new title is not staged
    changed = {sku for sku in after if after[sku] != before.get(sku)}
    assert changed == {2, 5, 9}
    assert set(before) - set(after) == {4}
    for sku in (1, 3, 6, 7, 8):  # 3 changed its title only: same image, same row
        assert after[sku] == before[sku]
    assert_current(after, scenario["config"], scenario["seeds_second"], 1)  # 5 holds its last image


def test_a_crash_before_commit_changes_nothing_and_the_rerun_embeds_each_sku_once(scenario):
    assert scenario["table_crashed"] == scenario["table_second"]
    rerun = scenario["rerun"]
    assert (rerun["mode"], rerun["skus_embedded"], rerun["skus_deleted"]) == ("incremental", 1, 0)
    assert rerun["sku_images"]["from_version"] == 4
    after = scenario["table_rerun"]
    assert {sku for sku in after if after[sku] != scenario["table_second"][sku]} == {6}
    assert_current(after, scenario["config"], scenario["seeds_rerun"], 1)
    staging = Path(scenario["config"].storage.root) / "_staging" / "embed_catalog"
    assert len(list(staging.iterdir())) == 1, "only the crashed run's (recent) staging folder is left"


def test_a_run_with_nothing_new_writes_nothing_and_a_title_change_only_records_the_version(scenario):
    noop = scenario["noop"]
    assert (noop["skus_embedded"], noop["sku_embeddings_version"], noop["skus_unchanged"]) == (0, None, 8)
    assert noop["serving_snapshot"]["published"] is False
    titles = scenario["titles"]
    assert (titles["mode"], titles["skus_embedded"], titles["skus_deleted"]) == ("incremental", 0, 0)
    assert titles["sku_embeddings_version"] == scenario["rerun"]["sku_embeddings_version"] + 1
    assert scenario["table_titles"] == scenario["table_rerun"]


def test_a_new_model_version_re_embeds_everything(scenario):
    new = scenario["new_model"]
    assert (new["mode"], new["model_version"], new["skus_embedded"], new["skus_unchanged"]) == ("full", 2, 8, 0)
    assert new["reason"] == "new model version 2 (was 1)"
    after = scenario["table_new_model"]
    assert_current(after, scenario["config"], scenario["seeds_rerun"], 2)
    assert all(after[s][2] != scenario["table_titles"][s][2] for s in after)


def test_unreadable_change_feed_falls_back_to_a_full_diff(scenario):
    fallback = scenario["fallback"]
    assert fallback["mode"] == "fallback"
    assert "DELTA_MISSING_CHANGE_DATA" in fallback["reason"]
    assert fallback["sku_images"]["from_version"] is None
    assert (fallback["skus_embedded"], fallback["skus_deleted"], fallback["skus_unchanged"]) == (2, 1, 6)
    before, after = scenario["table_new_model"], scenario["table_fallback"]
    assert {sku for sku in after if after[sku] != before.get(sku)} == {2, 10}
    assert set(before) - set(after) == {7}
    assert_current(after, scenario["config"], scenario["seeds_fallback"], 2)


def assert_snapshot_is(snapshot: dict[str, Any], state: dict[int, tuple]) -> None:
    assert snapshot["sku_ids"] == sorted(state)
    np.testing.assert_array_equal(snapshot["embeddings"], np.array([state[s][2] for s in sorted(state)], np.float32))


def test_an_incremental_run_patches_the_serving_snapshot_and_it_equals_the_table(scenario):
    first, second = scenario["first"]["serving_snapshot"], scenario["second"]["serving_snapshot"]
    assert (second["published"], second["patched_from"]) == (True, first["snapshot_version"])
    assert second["snapshot_version"] == first["snapshot_version"] + 1 and "patch_error" not in second
    snapshot = scenario["snapshot_second"]
    assert (snapshot["version"], snapshot["manifest"]["patched_from"]) == (second["snapshot_version"], 1)
    assert snapshot["manifest"]["table_version"] == scenario["second"]["sku_embeddings_version"]
    assert second["rows"] == len(scenario["table_second"]) == 8
    assert_snapshot_is(snapshot, scenario["table_second"])


def test_full_runs_and_refused_patches_publish_the_whole_table(scenario):
    for run_name in ("first", "new_model"):  # full mode: every row is rewritten anyway
        figures = scenario[run_name]["serving_snapshot"]
        assert (figures["published"], figures["patched_from"]) == (True, None), run_name
        assert "patch_error" not in figures
    rerun = scenario["rerun"]["serving_snapshot"]  # its base was damaged
    assert (rerun["published"], rerun["patched_from"]) == (True, None)
    assert "sha256 of embeddings.npy does not match" in rerun["patch_error"]
    titles = scenario["titles"]["serving_snapshot"]  # nothing written but the run's record: a copy
    assert titles["patched_from"] == rerun["snapshot_version"]
    assert scenario["snapshot_titles"]["manifest"]["table_version"] == scenario["titles"]["sku_embeddings_version"]
    assert_snapshot_is(scenario["snapshot_titles"], scenario["table_titles"])


def test_the_serving_snapshot_matches_the_table(scenario):
    from adrank.embed.serving import load_serving_snapshot

    last = scenario["fallback"]
    snapshot = load_serving_snapshot(serving_root(scenario["config"]), verify=True)
    assert last["serving_snapshot"]["published"] is True
    assert last["serving_snapshot"]["patched_from"] == scenario["new_model"]["serving_snapshot"]["snapshot_version"]
    assert snapshot.version == last["serving_snapshot"]["snapshot_version"]
    assert (snapshot.manifest["table_version"], snapshot.manifest["model_version"]) == (
        last["sku_embeddings_version"], 2)
    state = scenario["table_fallback"]
    assert snapshot.sku_ids.tolist() == sorted(state)
    np.testing.assert_array_equal(snapshot.embeddings, np.array([state[s][2] for s in sorted(state)], np.float32))


def test_latest_changes_keeps_the_last_change_of_each_sku(spark):
    from chispa import assert_df_equality

    from adrank.embed.incremental import latest_changes

    ddl = "sku_id long, image_hash string, image binary, _change_type string, _commit_version long"
    changes = spark.createDataFrame([
        (1, "a", b"a", "update_preimage", 3), (1, "b", b"b", "update_postimage", 3),  # updated
        (2, "c", b"c", "insert", 2), (2, "c", b"c", "delete", 4),                       # deleted at last
        (3, "d", b"d", "delete", 5), (3, "e", b"e", "insert", 5),                       # overwrite: kept
        (4, "f", b"f", "update_postimage", 2), (4, "g", b"g", "update_postimage", 6),   # twice: last wins
        (4, "f", b"f", "update_preimage", 6),
    ], ddl)
    expected = spark.createDataFrame(
        [(1, "b", b"b", False), (2, "c", b"c", True), (3, "e", b"e", False), (4, "g", b"g", False)],
        "sku_id long, image_hash string, image binary, deleted boolean")
    assert_df_equality(latest_changes(changes), expected, ignore_row_order=True, ignore_nullable=True)


def test_last_processed_reads_the_newest_commits_first_and_the_whole_history_only_if_needed(spark, tmp_path):
    path = str(tmp_path / "sku_embeddings")
    assert ensure_table(spark, path) and last_processed(spark, path, page=2) is None
    record = Processed("run-1", source_version=4, model_version=2, mode="full")
    assert record_without_rows(spark, path, record).version == 1
    assert last_processed(spark, path, page=2) == record
    for n in range(3):  # commits of another writer, no record: the record is now 4 commits back
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('other.writer' = '{n}')")
    assert last_processed(spark, path, page=2) == record  # not in the newest 2: read the history
    assert last_processed(spark, path) == record
    newer = Processed("run-2", source_version=6, model_version=2, mode="incremental")
    record_without_rows(spark, path, newer)
    assert last_processed(spark, path, page=2) == newer


def test_choose_mode():
    last = Processed("r", source_version=5, model_version=2, mode="incremental")
    assert choose_mode(None, 7, 2, False).mode == "full"
    assert (choose_mode(last, 7, 2, False).mode, choose_mode(last, 7, 2, False).from_version) == ("incremental", 6)
    assert not choose_mode(last, 5, 2, False).has_work
    assert choose_mode(last, 7, 3, False).mode == "full"
    assert choose_mode(last, 7, 2, True).reason == "requested (--full)"
    assert choose_mode(last, 3, 2, False).mode == "fallback"


def test_can_patch():
    merge = Merge("incremental", version=7, read_version=6, rows_inserted=1, rows_deleted=0, source_rows=1,
                  staged_path="/s")
    manifest = {"table_version": 6, "model_version": 2}
    assert can_patch(manifest, 7, 2, merge)
    assert can_patch(manifest, 7, 2, Merge("fallback", 7, 6, 1, 0, 1, "/s"))
    assert not can_patch(manifest, 7, 2, Merge("full", 7, 6, 1, 0, 1, "/s"))    # full mode
    assert not can_patch(manifest, 7, 2, None)                                  # nothing merged (no-op run)
    assert not can_patch(None, 7, 2, merge)                                     # first run
    assert not can_patch(manifest, 8, 2, merge)                                 # another commit came after
    assert not can_patch({**manifest, "table_version": 5}, 7, 2, merge)         # a lost publish
    assert not can_patch({**manifest, "model_version": 1}, 7, 2, merge)
    concurrent = dataclasses.replace(merge, read_version=5)  # a commit landed between its read and commit
    assert not can_patch(manifest, 7, 2, concurrent)
    assert not can_patch({**manifest, "table_version": 5}, 7, 2, concurrent)
    assert not can_patch(manifest, 7, 2, dataclasses.replace(merge, read_version=None))
    older = {**manifest, "table_version": 4}  # versions 5 and 6 only compacted files or set properties
    assert can_patch(older, 7, 2, merge, same_data_from=4)
    assert not can_patch(older, 7, 2, merge, same_data_from=5)                   # version 5 changed rows
    assert not can_patch(older, 7, 2, merge)


def data_files(spark, path: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).detail().first().numFiles)


def test_files_added_since_compaction_and_same_data_since_read_the_history():
    from collections import namedtuple

    from adrank.embed.store import files_added_since_compaction, same_data_since

    Commit = namedtuple("Commit", "version operation userMetadata operationMetrics")
    newest = [Commit(6, "MERGE", None, {"numTargetFilesAdded": "2"}),
              Commit(5, "SET TBLPROPERTIES", None, {}),
              Commit(4, "OPTIMIZE", None, {"numAddedFiles": "1"}),
              Commit(3, "MERGE", None, {"numTargetFilesAdded": "5"}),
              Commit(2, "MERGE", None, {"numTargetFilesAdded": "4"})]
    assert files_added_since_compaction(newest, page=10) == 2
    assert files_added_since_compaction(newest[3:], page=10) == 9   # no OPTIMIZE: everything since creation
    assert files_added_since_compaction(newest[3:], page=2) is None  # a full page without OPTIMIZE
    assert same_data_since(newest, 5) == 3  # 5 set a property, 4 compacted: 3's rows
    assert same_data_since(newest, 6) == 6 and same_data_since(newest, 3) == 3
    assert same_data_since(newest[:2], 5) == 4  # version 4 is not in the page: the walk stops


def test_compaction_keeps_the_rows_and_the_next_run_still_patches_the_snapshot(spark, tmp_path):
    config = tiny_config(tmp_path, "embed.batch_size=4", "embed.compact_after_files_added=3")
    register_model(config, seed=1)
    seeds = {sku: sku for sku in range(1, 7)}
    upsert(spark, config, {sku: (seed, f"t{sku}") for sku, seed in seeds.items()})
    first = run(spark, config)
    path = layout.table_path(config, layout.SKU_EMBEDDINGS)
    assert first["compaction"] is None and data_files(spark, path) == 2  # 2 added < 3

    seeds = {**seeds, 2: 102, 7: 7}
    upsert(spark, config, {sku: (seed, f"t{sku}") for sku, seed in seeds.items()})
    second = run(spark, config)
    assert second["compaction"]["files_removed"] >= 3 and second["compaction"]["files_added"] == 1
    assert second["compaction"]["version"] == second["sku_embeddings_version"] + 1
    assert data_files(spark, path) == 1
    before = table(spark, config)

    seeds = {**seeds, 3: 103}
    upsert(spark, config, {sku: (seed, f"t{sku}") for sku, seed in seeds.items()})
    third = run(spark, config)
    assert third["mode"] == "incremental" and third["skus_embedded"] == 1
    assert third["compaction"] is None  # 1 file added since the compaction
    assert third["serving_snapshot"]["patched_from"] == second["serving_snapshot"]["snapshot_version"]
    after = table(spark, config)
    assert {sku for sku in after if after[sku] != before.get(sku)} == {3}
    snapshot = current_snapshot(config)
    assert snapshot["manifest"]["table_version"] == third["sku_embeddings_version"]
    assert snapshot["sku_ids"] == sorted(after)
    for row, sku in enumerate(snapshot["sku_ids"]):
        np.testing.assert_array_equal(snapshot["embeddings"][row], np.array(after[sku][2], dtype=np.float32))
    assert_current(after, config, seeds, 1)


def test_no_registered_model_is_a_one_line_error_from_the_library_and_the_job(spark, tmp_path, capsys):
    config = tiny_config(tmp_path)
    with pytest.raises(EmbedError) as info:
        run(spark, config)
    assert "no registered pairwise model" in str(info.value) and "\n" not in str(info.value)
    status = load_job("embed_catalog").main(["--conf-file", str(TINY_CONF),
                   "--set", f"storage.root={tmp_path / 'tables'}", "--set", f"inputs.root={tmp_path / 'in'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(err) == 1 and err[0].startswith("embed_catalog: error: no registered pairwise model")
    report = json.loads(next((tmp_path / "tables" / "_runs").glob("embed_catalog-*.json")).read_text())
    assert report["status"] == "failed"


def test_a_model_for_another_image_size_is_refused(spark, tmp_path):
    config = tiny_config(tmp_path)
    register_model(config, seed=1)
    other = dataclasses.replace(config, features=dataclasses.replace(config.features, image_size=48))
    with pytest.raises(EmbedError, match="takes 32px images but features.image_size is 48"):
        run(spark, other)


@pytest.mark.parametrize("override, message", [
    ("embed.batch_size=0", "config key 'embed.batch_size' must be in 1..65536"),
    ("embed.batch_size=big", "config key 'embed.batch_size' must be int, got str 'big'"),
    ("embed.serving_keep=0", "config key 'embed.serving_keep' must be at least 1"),
    ("embed.serving_folder=../out", "config key 'embed.serving_folder' must be a folder below storage.local_root"),
    ("embed.partitions=-1", "config key 'embed.partitions' must be 0 (one per core) or more"),
    ("embed.bogus=1", "unknown config key 'embed.bogus'"),
])
def test_bad_embed_config_is_a_one_line_error_naming_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError) as info:
        tiny_config(tmp_path, override)
    assert message in str(info.value) and "\n" not in str(info.value)

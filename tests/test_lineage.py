"""Warm-started training with lineage: incremental runs continue their parent, bit for bit.

The planning (:mod:`adrank.train.lineage`) is checked without ranks: a full run's window,
a shaping setting that changed, stage 1's retraining period, nothing new to train, the
steps of an incremental run, stage-3 modules that disagree. Then one chain of real tiny LR
runs on 2 Horovod ranks (inline ``training_examples``, a date added before each night):
night 1 trains in full, nights 2 and 3 start from their parent's registered training state
(every rank's weights and optimizer state before the first step hash to the parent's final
state) on the new date only, and record the dates seen; a night without a new date keeps
the version; a changed ``features.hash_bits`` falls back to a full run on the newest
``train.window_days`` dates, saying why. Stage 1 on real ranks: kept inside its retraining
period, and a forced run continues it bit for bit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from adrank.core.config import TrainConfig
from adrank.core.layout import registry_root
from adrank.runtime.runs import RunReport
from adrank.train import lineage
from adrank.train import run as training
from adrank.train.lineage import Parent
from adrank.train.registry import versions
from conftest import tiny_config
from test_holdout_curve import lr_example, pair_examples
from test_training import write_examples, write_images

DAYS = [dt.date(2026, 11, 1) + dt.timedelta(days=n) for n in range(5)]
SHAPE = {"train.gradient_mode": "split", "features.hash_bits": 16}
ROWS = dict.fromkeys(DAYS, 100)


def parent(dates: list[dt.date], shape: dict[str, Any] = SHAPE, version: int = 3) -> Parent:
    metadata = {"train_state": "train_state/ckpt-6", "dates_trained": [str(d) for d in dates], "shape": shape}
    return Parent(version, f"/registry/lr/v{version}", metadata)


def test_a_full_run_trains_on_the_newest_window_days_and_says_why():
    train = TrainConfig(mode="full", window_days=2)
    plan = lineage.plan(train, "lr", DAYS[:4], ROWS, SHAPE, parent(DAYS[:3]))
    assert (plan.mode, plan.train_dates, plan.dates_trained) == ("full", tuple(DAYS[2:4]), tuple(DAYS[2:4]))
    assert plan.reason == "train.mode is full; train.window_days=2: from 2026-11-03"
    assert plan.parent_version is None and plan.warm_start == ""
    everything = lineage.plan(TrainConfig(), "lr", DAYS[:4], ROWS, SHAPE, None)
    assert (everything.mode, everything.train_dates) == ("full", tuple(DAYS[:4]))
    assert everything.reason == "no registered lr model yet"


def test_a_changed_shaping_setting_makes_the_run_full_with_its_reason():
    plan = lineage.plan(TrainConfig(), "lr", DAYS[:4], ROWS, {**SHAPE, "features.hash_bits": 12}, parent(DAYS[:3]))
    assert plan.mode == "full" and plan.train_dates == tuple(DAYS[:4])
    assert plan.line == "full: features.hash_bits 16 -> 12 since v3"
    stateless = Parent(2, "/registry/lr/v2", {"dates_trained": [str(DAYS[0])]})
    assert lineage.plan(TrainConfig(), "lr", DAYS[:2], ROWS, SHAPE, stateless).reason == \
        "v2 kept no training state to start from"


def test_an_incremental_run_trains_the_unseen_dates_with_steps_scaled_to_their_rows():
    plan = lineage.plan(TrainConfig(), "lr", DAYS[:4], ROWS, SHAPE, parent(DAYS[:3]))
    assert (plan.mode, plan.train_dates, plan.dates_trained) == ("incremental", (DAYS[3],), tuple(DAYS[:4]))
    assert plan.line == "incremental: v3 + 1 new date 2026-11-04"
    assert (plan.parent_version, plan.warm_start) == (3, "/registry/lr/v3/train_state/ckpt-6")
    assert plan.train_config(TrainConfig(lr_steps=300), "lr_steps").lr_steps == 75  # 300 x 100/400
    floor = dataclasses.replace(plan, new_row_share=0.001)
    assert floor.train_config(TrainConfig(lr_steps=300), "lr_steps").lr_steps == 30  # a tenth at least
    assert lineage.plan(TrainConfig(), "lr", DAYS[:3], ROWS, SHAPE, parent(DAYS[:3])).line == \
        "kept: nothing to train, v3 has trained on every training date (last 2026-11-03)"


def test_stage_one_is_kept_within_its_retraining_period_unless_forced():
    shape = {"train.gradient_mode": "split"}
    seen = parent(DAYS[:3], shape)
    kept = lineage.plan(TrainConfig(), "pairwise", DAYS[:5], ROWS, shape, seen)
    assert (kept.mode, kept.train_dates, kept.parent_version) == ("kept", (), 3)
    assert kept.line == "kept: retrained every 7 days, last on 2026-11-03"
    assert lineage.plan(TrainConfig(), "pairwise", DAYS[:5], ROWS, shape, seen, force=True).mode == "incremental"
    assert lineage.plan(TrainConfig(pairwise_every_days=2), "pairwise", DAYS[:5], ROWS, shape, seen).mode == \
        "incremental"
    assert lineage.plan(TrainConfig(mode="full"), "pairwise", DAYS[:5], ROWS, shape, seen).mode == "full"


def test_stage_three_modules_that_disagree_all_train_in_full():
    plans = {"joint_dot": lineage.plan(TrainConfig(), "joint", DAYS[:4], ROWS, SHAPE, parent(DAYS[:3])),
             "joint_dnn": lineage.plan(TrainConfig(), "joint", DAYS[:4], ROWS, SHAPE, None)}
    both = lineage.combined(TrainConfig(), DAYS[:4], plans)
    assert {p.mode for p in both.values()} == {"full"}
    assert both["joint_dot"].reason == ("the modules differ: joint_dot incremental: v3 + 1 new date 2026-11-04; "
                                       "joint_dnn full: no registered joint model yet")
    agreeing = {"joint_dot": plans["joint_dot"], "joint_dnn": plans["joint_dot"]}
    assert lineage.combined(TrainConfig(), DAYS[:4], agreeing) == agreeing


def test_the_task_line_says_how_the_stage_was_trained():
    from adrank.orchestration.headlines import lr_trained

    kept = training.TrainedStage("lr", {"model_version": 3, "metrics": {"auc": 0.61}, "mode": "kept",
                                        "mode_reason": "nothing to train, v3 has trained on every training date"})
    assert lr_trained(kept) == "model v3, AUC 0.6100; kept: nothing to train, v3 has trained on every training date"
    assert lr_trained(training.TrainedStage("lr", {"model_version": 1, "metrics": {"auc": 0.5}})) == \
        "model v1, AUC 0.5000"


# --------------------------------------------------------------------------------
# A chain of real LR runs on 2 ranks
# --------------------------------------------------------------------------------

STEPS = 6


def night(spark, config, day: dt.date | None) -> dict[str, Any]:
    """Adds ``day``'s examples (none: no new data), trains the LR; its figures."""
    if day is not None:
        rng = np.random.default_rng(day.toordinal())
        write_examples(spark, config, [lr_example(day, n, rng) for n in range(48)])
    report = RunReport("train")
    training.train(spark, config, report, "lr", None)
    return report.figures["lr"]


def metadata(config, version: int) -> dict[str, Any]:
    return json.loads((Path(registry_root(config)) / "lr" / f"v{version}" / "metadata.json").read_text())


@pytest.fixture(scope="module")
def chain(spark, tmp_path_factory) -> dict[str, Any]:
    pytest.importorskip("horovod.tensorflow")
    root = tmp_path_factory.mktemp("lineage")
    options = ("train.ranks=2", f"train.lr_steps={STEPS}", "train.lr_batch_size=16", "train.checkpoint_every=3",
               "features.max_sparse_ids=3", "train.ftrl_learning_rate=0.5")
    config = tiny_config(root, *options)
    write_examples(spark, config, [lr_example(day, n, np.random.default_rng(n)) for day in DAYS[:2] for n in range(48)])
    nights = [night(spark, config, DAYS[2]), night(spark, config, DAYS[3]), night(spark, config, DAYS[4]),
              night(spark, config, None)]
    reshaped = tiny_config(root, *options, "features.hash_bits=12", "train.window_days=2")
    return {"config": config, "nights": nights, "reshaped": night(spark, reshaped, None)}


def test_incremental_runs_start_from_their_parent_bit_for_bit_and_record_the_dates_seen(chain):
    config, (first, second, third, _) = chain["config"], chain["nights"]
    assert (first["mode"], first["mode_reason"], first["model_version"]) == ("full", "no registered lr model yet", 1)
    assert first["dates_trained"] == [str(d) for d in DAYS[:2]]
    for number, (run, before) in enumerate([(second, first), (third, second)], start=2):
        assert run["mode"] == "incremental" and run["parent_version"] == before["model_version"] == number - 1
        assert run["train_dates"] == [str(DAYS[number])]  # the new date only
        assert run["dates_trained"] == [str(d) for d in DAYS[:number + 1]]
        training_figures, parent_training = run["training"], before["training"]
        # Every rank, before its first step, holds the parent's final weights and optimizer state.
        assert training_figures["initial_state_digests"] == [parent_training["final_state_digest"]] * 2
        assert training_figures["initial_state_digests"] != parent_training["initial_state_digests"]
        assert training_figures["start_step"] == 0 and 0 < training_figures["steps_run"] < STEPS
        stored = metadata(config, number)
        assert (stored["parent_version"], stored["mode"]) == (number - 1, "incremental")
        assert stored["dates_trained"] == run["dates_trained"]
        assert stored["state_digest"] == training_figures["final_state_digest"]
        state = Path(registry_root(config)) / "lr" / f"v{number}" / stored["train_state"]
        assert state.with_suffix(".index").is_file()
    assert metadata(config, 1)["mode"] == "full"


def test_a_night_without_a_new_date_keeps_the_version(chain):
    kept = chain["nights"][3]
    assert kept["mode"] == "kept" and kept["model_version"] == 3 and kept["train_dates"] == []
    assert kept["mode_reason"] == "nothing to train, v3 has trained on every training date (last 2026-11-04)"
    assert "training" not in kept and kept["metrics"]["auc"] == metadata(chain["config"], 3)["metrics"]["auc"]


def test_a_changed_hashing_setting_trains_in_full_on_the_window(chain):
    reshaped, config = chain["reshaped"], chain["config"]
    assert reshaped["mode"] == "full" and reshaped["model_version"] == 4
    assert reshaped["mode_reason"] == "features.hash_bits 16 -> 12 since v3; train.window_days=2: from 2026-11-03"
    assert reshaped["train_dates"] == reshaped["dates_trained"] == [str(DAYS[2]), str(DAYS[3])]
    assert reshaped["training"]["steps_run"] == STEPS and metadata(config, 4)["parent_version"] is None
    assert versions(registry_root(config), "lr") == [1, 2, 3, 4]


@pytest.fixture(scope="module")
def stage_one(spark, tmp_path_factory) -> dict[str, Any]:
    pytest.importorskip("horovod.tensorflow")
    config = tiny_config(tmp_path_factory.mktemp("stage_one"), "train.ranks=2", "train.pair_steps=4",
                         "train.pair_batch_size=4", "train.checkpoint_every=2")
    write_images(spark, config, [sku for context in range(1, 9) for sku in (context, context + 10, context + 20)])
    runs = {}
    for name, day, force in (("first", DAYS[1], False), ("kept", DAYS[2], False), ("forced", None, True)):
        if day is not None:
            write_examples(spark, config, pair_examples(day) + (pair_examples(DAYS[0]) if name == "first" else []))
        report = RunReport("train")
        training.train(spark, config, report, "pairwise", None, force=force)
        runs[name] = report.figures["pairwise"]
    return runs


def test_stage_one_is_kept_inside_its_period_and_a_forced_run_continues_it_bit_for_bit(stage_one):
    first, kept, forced = stage_one["first"], stage_one["kept"], stage_one["forced"]
    assert (first["mode"], first["model_version"], first["dates_trained"]) == ("full", 1, [str(DAYS[0])])
    assert (kept["mode"], kept["model_version"]) == ("kept", 1) and "training" not in kept
    assert kept["mode_reason"] == "retrained every 7 days, last on 2026-11-01"
    assert kept["metrics"]["pairwise_accuracy"] == first["metrics"]["pairwise_accuracy"]
    assert (forced["mode"], forced["parent_version"], forced["model_version"]) == ("incremental", 1, 2)
    assert forced["train_dates"] == [str(DAYS[1])] and forced["dates_trained"] == [str(d) for d in DAYS[:2]]
    assert forced["training"]["initial_state_digests"] == [first["training"]["final_state_digest"]] * 2

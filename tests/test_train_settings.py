"""The rank's seed, log interval, step watchdog, determinism and TensorBoard folder come from ``train.*``.

``--set train.seed=7`` style overrides reach the :class:`RankSettings` the driver builds
(:func:`adrank.train.launch.train_on_ranks`, the launcher replaced by one that keeps the
settings instead of starting ranks); invalid values are refused with a one-line
:class:`ConfigError`; the operational keys leave the checkpoint folder alone, the seed does not.
"""

from __future__ import annotations

import pytest

from adrank.core import layout
from adrank.core.config import ConfigError
from adrank.runtime.runs import RunReport
from adrank.train import launch
from adrank.train.pinned import PinnedData
from adrank.train.ranks.settings import TENSORBOARD_FOLDER, checkpoint_dir, config_hash, tensorboard_dir
from adrank.train.run import STAGE_DRIVERS
from conftest import TINY_CONF, load_job, tiny_config

SET = ("train.seed=7", "train.log_every=3", "train.step_timeout_s=30", "train.deterministic=true",
       "train.tensorboard_dir=/tmp/adrank-tb")


def settings_the_driver_builds(monkeypatch, config, stage: str = layout.LR):
    """The RankSettings :func:`train_on_ranks` launches for a stage of ``config`` (no rank started)."""
    launched = []

    def keep(settings, **_):
        launched.append(settings)
        return {"final_step": 0}

    monkeypatch.setattr(launch, "launch", keep)
    pinned = PinnedData(spark=None, config=config, report=RunReport("train"), spec=STAGE_DRIVERS[stage],
                        examples=None, version=1, train_dates=[], holdout_dates=[], figures={})
    returned = launch.train_on_ranks(pinned, 1, {"examples": ["a.parquet"]}, {})
    assert launched == [returned]
    assert pinned.figures["training"] == {"final_step": 0}
    return returned


def test_set_train_keys_reach_the_ranks(monkeypatch, tmp_path):
    settings = settings_the_driver_builds(monkeypatch, tiny_config(tmp_path, *SET))
    assert (settings.seed, settings.log_every, settings.step_timeout_s, settings.deterministic) == (7, 3, 30.0, True)
    assert isinstance(settings.step_timeout_s, float)
    assert tensorboard_dir(settings) == "/tmp/adrank-tb"
    assert settings.stage == layout.LR and settings.spec is STAGE_DRIVERS[layout.LR].rank


def test_the_defaults_are_the_settings_of_before(monkeypatch, tmp_path):
    settings = settings_the_driver_builds(monkeypatch, tiny_config(tmp_path))
    assert (settings.seed, settings.log_every, settings.step_timeout_s, settings.deterministic) == (0, 10, 900.0, False)
    assert tensorboard_dir(settings) == f"{checkpoint_dir(settings)}/{TENSORBOARD_FOLDER}"


def test_only_the_seed_of_the_new_keys_starts_fresh_checkpoints(monkeypatch, tmp_path):
    base = settings_the_driver_builds(monkeypatch, tiny_config(tmp_path))
    operational = settings_the_driver_builds(monkeypatch, tiny_config(tmp_path, *SET[1:]))
    seeded = settings_the_driver_builds(monkeypatch, tiny_config(tmp_path, "train.seed=7"))
    assert config_hash(base) == config_hash(operational)
    assert config_hash(base) != config_hash(seeded)


@pytest.mark.parametrize(("override", "message"), [
    ("train.seed=-1", "config key 'train.seed' must be at least 0"),
    ("train.seed=1.5", "config key 'train.seed' must be int, got float 1.5"),
    ("train.log_every=0", "config key 'train.log_every' must be at least 1"),
    ("train.step_timeout_s=-5", "config key 'train.step_timeout_s' must be at least 0 (0 = no step watchdog)"),
    ("train.deterministic=sometimes", "config key 'train.deterministic' must be bool"),
])
def test_invalid_values_are_a_one_line_config_error(tmp_path, override, message):
    with pytest.raises(ConfigError) as info:
        tiny_config(tmp_path, override)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_the_train_job_refuses_an_invalid_seed_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_job("train").main(["--conf-file", str(TINY_CONF), "--stage", "lr", "--set", "train.seed=-3",
                                "--set", f"storage.root={tmp_path / 'tables'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["train: config error: config key 'train.seed' must be at least 0"]

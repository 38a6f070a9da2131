"""Config parsing: overrides, types, unknown and missing keys, exit status 2 before Spark."""

from __future__ import annotations

import subprocess
import sys

import pytest

from adrank import tables
from adrank.config import ConfigError, load_config
from adrank.embed.catalog import serving_root
from adrank.train.registry import registry_root
from conftest import REPO, TINY_CONF, tiny_config


def test_overrides_are_typed_and_frozen(tmp_path):
    config = tiny_config(tmp_path, "sample.seed=99", "sample.cold_start_fraction=0.1")
    assert config.sample.seed == 99
    assert config.features.max_image_bytes == 64 << 20  # the default: 64 MiB
    assert config.sample.cold_start_fraction == 0.1
    assert config.storage.root == str(tmp_path / "tables")
    with pytest.raises(AttributeError):
        config.sample.seed = 1  # frozen


@pytest.mark.parametrize(
    "override, message",
    [
        ("sample.sed=3", "unknown config key 'sample.sed'"),
        ("sample.num_skus=many", "config key 'sample.num_skus' must be int, got str 'many'"),
        ("sample.num_skus=true", "config key 'sample.num_skus' must be int, got bool"),
        ("sample.start_date=yesterday", "config key 'sample.start_date' must be an ISO date"),
        ("spark.conf={spark.hadoop.fs.s3a.secret.key: x}", "looks like a credential"),
        ("noequals", "must look like key=value"),
        ("features.max_image_bytes=2147483648", "config key 'features.max_image_bytes' must be in 1024..2147483647"),
        ("features.max_image_bytes=0", "config key 'features.max_image_bytes' must be in 1024..2147483647"),
    ],
)
def test_bad_values_name_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=None) as info:
        tiny_config(tmp_path, override)
    assert message in str(info.value)


def test_relative_local_roots_become_absolute_and_uris_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(TINY_CONF, ["storage.root=rel/tables", "inputs.root=s3a://bucket/in"])
    assert config.storage.root == str(tmp_path / "rel" / "tables")
    assert config.inputs.root == "s3a://bucket/in"


def test_object_store_root_needs_a_local_root_for_registry_checkpoints_and_snapshots(tmp_path):
    with pytest.raises(ConfigError, match="config key 'storage.local_root' must be set when storage.root is "
                                         "'s3a://bucket/tables'"):
        tiny_config(tmp_path, "storage.root=s3a://bucket/tables")
    with pytest.raises(ConfigError, match="config key 'storage.local_root' must be an absolute local path"):
        tiny_config(tmp_path, "storage.root=s3a://bucket/tables", "storage.local_root=rel/models")
    config = tiny_config(tmp_path, "storage.root=s3a://bucket/tables", f"storage.local_root={tmp_path}/shared")
    assert (registry_root(config), serving_root(config)) == (f"{tmp_path}/shared/models",
                                                            f"{tmp_path}/shared/serving/sku_embeddings")
    assert tables.table_path(config, tables.SKU_IMAGES) == "s3a://bucket/tables/sku_images"
    local = tiny_config(tmp_path)  # a local root holds everything
    assert registry_root(local) == f"{local.storage.root}/models"


def test_the_cluster_example_config_loads():
    config = load_config(REPO / "conf" / "cluster.yaml")
    assert config.storage.root.startswith("s3a://") and config.storage.local == "/mnt/adrank"


def test_missing_required_key(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("inputs:\n  root: x\n")
    with pytest.raises(ConfigError, match="missing required config key 'storage.root'"):
        load_config(conf)


def test_job_exits_2_with_one_line_before_spark_starts(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "generate_data.py"), "--conf-file", str(TINY_CONF),
         "--set", f"storage.root={tmp_path}", "--set", "sample.bogus=1"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["generate_data: config error: unknown config key 'sample.bogus'"]
    assert not (tmp_path / "_runs").exists()


def test_spark_submit_sh_rejects_bad_config_and_unbuilt_jobs(tmp_path):
    bad = subprocess.run(
        [str(REPO / "spark-submit.sh"), "generate_data", "--conf-file", str(TINY_CONF),
         "--set", "sample.num_days=x"],
        capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2
    assert "config key 'sample.num_days' must be int" in bad.stderr
    unbuilt = subprocess.run(
        [str(REPO / "spark-submit.sh"), "recommend"], capture_output=True, text=True, timeout=60
    )
    assert unbuilt.returncode == 2
    assert "not built yet" in unbuilt.stderr


def test_credentials_come_from_env_and_are_not_printed(tmp_path, monkeypatch):
    from adrank.spark import _hadoop_credentials

    monkeypatch.setenv("ADRANK_TEST_SECRET", "s3cr3t-value")
    config = tiny_config(tmp_path, "spark.hadoop_env={fs.s3a.secret.key: ADRANK_TEST_SECRET}")
    assert "s3cr3t-value" not in repr(config)
    assert _hadoop_credentials(config.spark.hadoop_env) == {
        "spark.hadoop.fs.s3a.secret.key": "s3cr3t-value"
    }

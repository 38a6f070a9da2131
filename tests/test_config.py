"""Config parsing: overrides, types, unknown and missing keys, exit status 2 before Spark."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from adrank import layout
from adrank.config import ConfigError, load_config
from adrank.layout import registry_root, serving_root
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
    assert layout.table_path(config, layout.SKU_IMAGES) == "s3a://bucket/tables/sku_images"
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


def test_spark_submit_sh_rejects_bad_config_and_unknown_jobs(tmp_path):
    bad = subprocess.run(
        [str(REPO / "spark-submit.sh"), "generate_data", "--conf-file", str(TINY_CONF),
         "--set", "sample.num_days=x"],
        capture_output=True, text=True, timeout=120,
    )
    assert bad.returncode == 2
    assert "config key 'sample.num_days' must be int" in bad.stderr
    unknown = subprocess.run(
        [str(REPO / "spark-submit.sh"), "rank_everything"], capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode == 2
    assert "unknown job 'rank_everything'" in unknown.stderr and "recommend" in unknown.stderr  # the jobs listed


def test_recommend_without_embeddings_is_one_line_and_writes_nothing(tmp_path):
    missing = subprocess.run(
        [str(REPO / "spark-submit.sh"), "recommend", "--conf-file", str(TINY_CONF),
         "--set", f"storage.root={tmp_path / 'tables'}", "--set", f"inputs.root={tmp_path / 'inputs'}"],
        capture_output=True, text=True, timeout=300,
    )
    assert missing.returncode == 1, missing.stderr[-2000:]
    output = missing.stdout + missing.stderr  # spark-submit may route the driver's stderr to stdout
    [line] = [x for x in output.splitlines() if x.startswith("recommend: error:")]
    assert "no serving snapshot" in line and "embed_catalog" in line and "Traceback" not in output
    assert not any((tmp_path / "tables").glob("*_recommendations")) and not (tmp_path / "tables" / "similar_skus").exists()


def test_credentials_come_from_env_and_are_not_printed(tmp_path, monkeypatch):
    from adrank.spark import _hadoop_credentials

    monkeypatch.setenv("ADRANK_TEST_SECRET", "s3cr3t-value")
    config = tiny_config(tmp_path, "spark.hadoop_env={fs.s3a.secret.key: ADRANK_TEST_SECRET}")
    assert "s3cr3t-value" not in repr(config)
    assert _hadoop_credentials(config.spark.hadoop_env) == {
        "spark.hadoop.fs.s3a.secret.key": "s3cr3t-value"
    }


# --------------------------------------------------------------------------------
# Credentials: literal spark.conf keys, the credential check, redacted dumps
# --------------------------------------------------------------------------------

CREDENTIAL_KEYS = [
    "spark.hadoop.fs.s3a.secret.key",
    "spark.hadoop.fs.azure.account.key.myaccount.dfs.core.windows.net",
    "spark.hadoop.fs.s3a.encryption.key",
    "spark.hadoop.fs.gs.auth.service.account.private.key",
    "spark.authenticate.secret",
    "spark.ssl.keyStorePassword",
    "spark.hadoop.fs.s3a.session.token",
    "SPARK.HADOOP.FS.S3A.SECRET.KEY",
    "spark.hadoop.fs.azure.sas.container.account.blob.core.windows.net",
]
ORDINARY_KEYS = ["spark.authenticate.enableSaslEncryption", "spark.io.encryption.enabled",
                 "spark.sql.shuffle.partitions", "spark.io.encryption.keySizeBits",
                 "spark.hadoop.fs.s3a.endpoint"]


@pytest.mark.parametrize("key", CREDENTIAL_KEYS)
@pytest.mark.parametrize("form", ["dotted", "mapping"])
def test_credential_spark_conf_keys_are_rejected_with_one_line_naming_the_key(tmp_path, key, form):
    override = f"spark.conf.{key}=s3cr3t" if form == "dotted" else f"spark.conf={{{key}: s3cr3t}}"
    with pytest.raises(ConfigError) as info:
        tiny_config(tmp_path, override)
    message = str(info.value)
    assert f"'spark.conf.{key}'" in message and "spark.hadoop_env" in message
    assert "\n" not in message and "s3cr3t" not in message


def test_sparks_own_redaction_covers_every_credential_key_and_no_ordinary_one(spark):
    """hadoop_env puts credentials in spark.hadoop.* settings: the UI and event log must hide them."""
    import re

    from adrank.spark import REDACTION_REGEX

    assert all(re.search(REDACTION_REGEX, key) for key in CREDENTIAL_KEYS)
    assert not any(re.search(REDACTION_REGEX, key) for key in ORDINARY_KEYS)
    assert spark.sparkContext.getConf().get("spark.redaction.regex") == REDACTION_REGEX


def test_the_nested_key_bypass_is_rejected(tmp_path):
    """Once, ``spark.conf.spark.hadoop...`` nested into a key ``spark`` and passed the check."""
    with pytest.raises(ConfigError, match=r"'spark.conf.spark.hadoop.fs.s3a.secret.key' looks like a credential"):
        tiny_config(tmp_path, "spark.conf.spark.hadoop.fs.s3a.secret.key=s3cr3t")
    with pytest.raises(ConfigError, match=r"'spark.conf.spark' must be a single value: keys under 'spark.conf' "
                                          "are literal"):
        tiny_config(tmp_path, "spark.conf={spark: {hadoop: {fs.s3a.secret.key: s3cr3t}}}")


@pytest.mark.parametrize("key", ORDINARY_KEYS)
def test_ordinary_spark_settings_are_accepted(tmp_path, key):
    assert dict(tiny_config(tmp_path, f"spark.conf.{key}=3").spark.conf) == {key: "3"}


def test_dotted_spark_conf_overrides_are_literal_keys_beside_the_files_keys(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text(TINY_CONF.read_text().replace(
        "\nspark:\n", "\nspark:\n  conf:\n    spark.hadoop.fs.s3a.endpoint: http://minio:9000\n"))
    config = load_config(conf, [f"storage.root={tmp_path}", "spark.conf.spark.sql.shuffle.partitions=3",
                                "spark.hadoop_env.fs.s3a.secret.key=ADRANK_TEST_SECRET"])
    assert dict(config.spark.conf) == {"spark.hadoop.fs.s3a.endpoint": "http://minio:9000",
                                       "spark.sql.shuffle.partitions": "3"}
    assert dict(config.spark.hadoop_env) == {"fs.s3a.secret.key": "ADRANK_TEST_SECRET"}


def test_redaction_replaces_credential_values_anywhere_and_keeps_env_var_names():
    from adrank.config import REDACTED, redacted, to_json

    dump = {"config": {"spark": {"conf": {"spark.sql.shuffle.partitions": "3",
                                          "spark.hadoop.fs.s3a.secret.key": "s3cr3t"},
                                 "hadoop_env": {"fs.s3a.secret.key": "AWS_SECRET_ACCESS_KEY"}}},
            "runs": [{"Password": "hunter2", "nested": {"fs.azure.account.key.a.b": "k3y"}}],
            "metrics": {"auc": float("nan"), "rows": 0}}
    clean = redacted(dump)
    assert clean["config"]["spark"]["conf"] == {"spark.sql.shuffle.partitions": "3",
                                                "spark.hadoop.fs.s3a.secret.key": REDACTED}
    assert clean["config"]["spark"]["hadoop_env"] == {"fs.s3a.secret.key": "AWS_SECRET_ACCESS_KEY"}
    assert clean["runs"] == [{"Password": REDACTED, "nested": {"fs.azure.account.key.a.b": REDACTED}}]
    text = to_json(dump, sort_keys=True)
    assert not any(secret in text for secret in ("s3cr3t", "hunter2", "k3y"))
    assert json.loads(text)["metrics"] == {"auc": None, "rows": 0}  # valid JSON: NaN as null


def test_a_loaded_config_dumps_without_secrets(tmp_path, monkeypatch):
    from adrank.config import to_json

    monkeypatch.setenv("ADRANK_TEST_SECRET", "s3cr3t-value")
    config = tiny_config(tmp_path, "spark.hadoop_env={fs.s3a.secret.key: ADRANK_TEST_SECRET}")
    dump = json.loads(to_json(config))
    assert dump["spark"]["hadoop_env"] == {"fs.s3a.secret.key": "ADRANK_TEST_SECRET"}
    assert "s3cr3t-value" not in json.dumps(dump)


def test_run_reports_and_registry_metadata_are_written_redacted(tmp_path, capsys):
    from adrank import versioned
    from adrank.config import REDACTED
    from adrank.runs import RunReport, publish_report
    from adrank.train.registry import METADATA, MODELS

    config = tiny_config(tmp_path)
    report = RunReport("train", figures={"spark.hadoop.fs.s3a.secret.key": "s3cr3t", "auc": float("nan")})
    line = publish_report(None, config, report, json_line=True)
    stored = (tmp_path / "tables" / "_runs" / f"train-{report.run_id}.json").read_text()
    for text in (line, stored, capsys.readouterr().out):
        assert "s3cr3t" not in text and "NaN" not in text
    assert json.loads(stored)["spark.hadoop.fs.s3a.secret.key"] == REDACTED

    folder = tmp_path / "models" / "lr"
    version = versioned.publish(folder, MODELS, lambda _: {
        "config": {"spark": {"conf": {"spark.authenticate.secret": "s3cr3t"}}}, "metrics": {"cold_auc": float("nan")}})
    metadata = (folder / f"v{version}" / METADATA).read_text()
    assert "s3cr3t" not in metadata and json.loads(metadata)["metrics"] == {"cold_auc": None}


def test_the_registry_refuses_a_model_with_nan_metrics(tmp_path):
    from adrank.train.registry import export_model, versions

    with pytest.raises(ValueError, match="refusing to register a lr model whose metrics auc, log_loss are NaN"):
        export_model(tmp_path, "lr", linear_model=object(), image_size=32, data_version=0,
                     metrics={"auc": float("nan"), "log_loss": float("nan"), "rows": 0})
    assert versions(tmp_path, "lr") == []

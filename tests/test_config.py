"""Config parsing: overrides, types, unknown and missing keys, exit status 2 before Spark."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from adrank.core import layout
from adrank.core.config import ConfigError, load_config
from adrank.core.layout import registry_root, serving_root
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
        ("train.mode=nightly", "config key 'train.mode' must be incremental or full"),
        ("train.window_days=-1", "config key 'train.window_days' must be at least 0"),
        ("train.pairwise_every_days=-7", "config key 'train.pairwise_every_days' must be at least 0"),
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
    from adrank.runtime.spark import hadoop_credentials

    monkeypatch.setenv("ADRANK_TEST_SECRET", "s3cr3t-value")
    config = tiny_config(tmp_path, "spark.hadoop_env={fs.s3a.secret.key: ADRANK_TEST_SECRET}")
    assert "s3cr3t-value" not in repr(config)
    assert hadoop_credentials(config.spark.hadoop_env) == {
        "spark.hadoop.fs.s3a.secret.key": "s3cr3t-value"
    }


# --------------------------------------------------------------------------------
# Credentials: literal spark.conf keys, the credential check, redacted dumps
# --------------------------------------------------------------------------------

CREDENTIAL_KEYS = [  # keys that HOLD a secret: refused in spark.conf, their values redacted in dumps
    "spark.hadoop.fs.s3a.secret.key",
    "spark.hadoop.fs.s3a.access.key",
    "spark.hadoop.fs.s3a.bucket.logs.secret.key",
    "spark.hadoop.fs.azure.account.key.myaccount.dfs.core.windows.net",
    "spark.hadoop.fs.azure.account.key.myaccount.blob.core.windows.net",
    "spark.hadoop.fs.azure.account.oauth2.client.secret",
    "spark.hadoop.fs.azure.account.oauth2.client.secret.myaccount.dfs.core.windows.net",
    "spark.hadoop.fs.s3a.encryption.key",
    "spark.hadoop.fs.s3a.server-side-encryption.key",
    "spark.hadoop.fs.gs.auth.service.account.private.key",
    "spark.authenticate.secret",
    "spark.ssl.keyStorePassword",
    "spark.ssl.keyPassword",
    "spark.hadoop.javax.jdo.option.ConnectionPassword",
    "spark.hadoop.fs.s3a.session.token",
    "spark.kubernetes.authenticate.driver.oauthToken",
    "spark.executorEnv.MLFLOW_TRACKING_TOKEN",
    "SPARK.HADOOP.FS.S3A.SECRET.KEY",
    "spark.hadoop.fs.azure.sas.container.account.blob.core.windows.net",
    "spark.hadoop.fs.azure.sas.provider.account.blob.core.windows.net",  # a container named "provider"
    "spark.hadoop.fs.azure.sas.fixed.token",
]
ORDINARY_KEYS = ["spark.authenticate.enableSaslEncryption", "spark.io.encryption.enabled",
                 "spark.sql.shuffle.partitions", "spark.io.encryption.keySizeBits",
                 "spark.hadoop.fs.s3a.endpoint"]
CREDENTIAL_SETTINGS = [  # keys that merely NAME a credential (a switch, a class, a path): accepted, shown
    ("spark.security.credentials.hive.enabled", "false"),
    ("spark.security.credentials.hbase.enabled", "false"),
    ("spark.security.credentials.renewalRatio", "0.75"),
    ("spark.hadoop.fs.s3a.aws.credentials.provider", "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"),
    ("spark.hadoop.fs.s3a.assumed.role.credentials.provider",
     "com.amazonaws.auth.EnvironmentVariableCredentialsProvider"),
    ("spark.hadoop.fs.s3a.delegation.token.binding",
     "org.apache.hadoop.fs.s3a.auth.delegation.SessionTokenBinding"),
    ("spark.hadoop.fs.azure.account.oauth.provider.type",
     "org.apache.hadoop.fs.azurebfs.oauth2.ClientCredsTokenProvider"),
    ("spark.hadoop.fs.azure.sas.token.provider.type", "com.example.MySasTokenProvider"),
    ("spark.hadoop.hadoop.security.credential.provider.path", "jceks://hdfs/user/adrank/s3.jceks"),
    ("spark.authenticate.secret.file", "/etc/spark/secret"),
    ("spark.authenticate.enableSaslEncryption", "true"),
    ("spark.kubernetes.driver.secrets.spark-secret", "/etc/secrets"),
    ("spark.kubernetes.executor.secretKeyRef.DB_PASSWORD", "db-secret:password"),
    ("spark.sql.mapKeyDedupPolicy", "LAST_WIN"),
]


def test_the_credential_rule_refuses_keys_holding_a_secret_and_accepts_keys_naming_one():
    from adrank.core.config import is_credential_key

    assert [key for key in CREDENTIAL_KEYS if not is_credential_key(key)] == []
    assert [key for key, _ in CREDENTIAL_SETTINGS if is_credential_key(key)] == []
    assert [key for key in ORDINARY_KEYS if is_credential_key(key)] == []


@pytest.mark.parametrize("key, value", CREDENTIAL_SETTINGS)
def test_settings_that_name_a_credential_are_accepted_and_dumped_as_they_are(tmp_path, key, value):
    from adrank.core.config import to_json

    config = tiny_config(tmp_path, f"spark.conf.{key}={value}")
    assert dict(config.spark.conf) == {key: value}
    assert json.loads(to_json(config))["spark"]["conf"] == {key: value}  # not redacted


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

    from adrank.runtime.spark import REDACTION_REGEX

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
    from adrank.core.config import REDACTED, redacted, to_json

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
    from adrank.core.config import to_json

    monkeypatch.setenv("ADRANK_TEST_SECRET", "s3cr3t-value")
    config = tiny_config(tmp_path, "spark.hadoop_env={fs.s3a.secret.key: ADRANK_TEST_SECRET}")
    dump = json.loads(to_json(config))
    assert dump["spark"]["hadoop_env"] == {"fs.s3a.secret.key": "ADRANK_TEST_SECRET"}
    assert "s3cr3t-value" not in json.dumps(dump)


def test_run_reports_and_registry_metadata_are_written_redacted(tmp_path, capsys):
    from adrank.core.config import REDACTED
    from adrank.runtime.runs import RunReport, publish_report
    from adrank.storage import versioned
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


# --------------------------------------------------------------------------------
# YAML scalars for str keys: a date or a number keeps its text, in --set and in a file
# --------------------------------------------------------------------------------

TEXT_VALUES = [  # (written, key, the str the config holds)
    ("sample.start_date=2026-11-05", "sample.start_date", "2026-11-05"),
    ("tracking.experiment=1.10", "tracking.experiment", "1.10"),
    ("tracking.experiment=2026", "tracking.experiment", "2026"),
    ("spark.driver_memory=010", "spark.driver_memory", "010"),
]


@pytest.mark.parametrize("override, key, text", TEXT_VALUES)
def test_a_date_or_a_number_for_a_str_key_keeps_its_text_in_set_and_in_a_file(tmp_path, override, key, text):
    from adrank.core.config import get_value

    assert get_value(tiny_config(tmp_path, override), key) == text
    section, name = key.split(".")
    written = override.partition("=")[2]
    conf = tmp_path / "c.yaml"
    conf.write_text(f"storage:\n  root: {tmp_path}\ninputs:\n  root: {tmp_path}\n{section}:\n  {name}: {written}\n")
    assert get_value(load_config(conf), key) == text


def test_spark_conf_values_keep_the_text_they_were_written_as(tmp_path):
    config = tiny_config(tmp_path, "spark.conf.spark.sql.shuffle.partitions=010",
                         "spark.conf.spark.memory.fraction=0.60", "spark.conf.spark.x.day=2026-11-05",
                         "spark.conf.spark.sql.adaptive.enabled=false", "spark.conf.spark.eventLog.enabled=True")
    assert dict(config.spark.conf) == {"spark.sql.shuffle.partitions": "010", "spark.memory.fraction": "0.60",
                                       "spark.x.day": "2026-11-05", "spark.sql.adaptive.enabled": "false",
                                       "spark.eventLog.enabled": "true"}


def test_numbers_for_number_keys_are_plain_numbers(tmp_path):
    config = tiny_config(tmp_path, "sample.seed=0x10", "recommend.popularity_weight=2", "recommend.k=1_0")
    assert (config.sample.seed, config.recommend.k, config.recommend.popularity_weight) == (16, 10, 2.0)
    assert (type(config.sample.seed), type(config.recommend.k), type(config.recommend.popularity_weight)) == (
        int, int, float)
    assert json.loads(json.dumps(dataclasses.asdict(config.sample)))["seed"] == 16


@pytest.mark.parametrize(
    "override, message",
    [
        ("tracking.experiment=[a, b]", "config key 'tracking.experiment' must be str, got list"),
        ("tracking.experiment={a: 1}", "config key 'tracking.experiment' must be str, got dict"),
        ("tracking.experiment=yes", "config key 'tracking.experiment' must be str, got bool True (YAML reads "
                                    "yes/no/on/off/true/false as a boolean: quote the word to mean it)"),
        ("sample.seed=2026-11-05", "config key 'sample.seed' must be int, got str '2026-11-05'"),
        ("sample.seed=1.5", "config key 'sample.seed' must be int, got float 1.5"),
        ("tracking.enabled=0", "config key 'tracking.enabled' must be bool, got int 0"),
        ("features.crosses=[a*b, [c]]", "config key 'features.crosses[1]' must be str, got list"),
    ],
)
def test_wrong_types_for_str_and_number_keys_are_still_refused(tmp_path, override, message):
    with pytest.raises(ConfigError) as info:
        tiny_config(tmp_path, override)
    assert message in str(info.value)


def test_a_quoted_boolean_word_is_a_str(tmp_path):
    assert tiny_config(tmp_path, "tracking.experiment='yes'").tracking.experiment == "yes"


def test_the_cli_prints_a_start_date_set_on_the_command_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "adrank.runtime.cli", "get", "sample.start_date", "--conf-file", str(TINY_CONF),
         "--set", f"storage.root={tmp_path}", "--set", "sample.start_date=2026-11-05"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "2026-11-05\n", "")


# --------------------------------------------------------------------------------
# No credential in a URI or in spark.hadoop_env reaches the console or a file
# --------------------------------------------------------------------------------

TOKEN = "dapi0123456789abcdef"


@pytest.mark.parametrize("uri", [f"http://{TOKEN}@mlflow.example:5999", f"https://{TOKEN}@mlflow.example/api",
                                 f"http://adrank:{TOKEN}@mlflow.example:5999", f"{TOKEN}@mlflow.example:5999",
                                 f"databricks://{TOKEN}@workspace"])
def test_a_tracking_uri_with_user_info_is_refused_without_showing_it(tmp_path, uri):
    with pytest.raises(ConfigError) as info:
        tiny_config(tmp_path, f"tracking.uri={uri}")
    message = str(info.value)
    assert message.startswith("config key 'tracking.uri' carries user-info") and "MLFLOW_TRACKING_TOKEN" in message
    assert TOKEN not in message and "\n" not in message


@pytest.mark.parametrize("uri", ["http://mlflow.example:5999", "databricks", "file:///srv/ml@runs",
                                 "sqlite:////srv/mlflow.db", "http://mlflow.example/api?user=a@b.c"])
def test_tracking_uris_without_user_info_are_accepted(tmp_path, uri):
    assert tiny_config(tmp_path, f"tracking.uri={uri}").tracking.uri == uri


def test_a_job_refuses_a_tracking_uri_with_a_token_before_it_writes_anything(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "generate_data.py"), "--conf-file", str(TINY_CONF),
         "--set", f"storage.root={tmp_path}", "--set", f"tracking.uri=http://{TOKEN}@mlflow.example:5999"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and TOKEN not in result.stdout + result.stderr
    assert result.stderr.startswith("generate_data: config error: config key 'tracking.uri' carries user-info")
    assert not (tmp_path / "_runs").exists()


def test_dumps_strip_the_user_info_of_uris_anywhere(tmp_path, capsys):
    from adrank.core.config import REDACTED, redacted, to_json
    from adrank.runtime.runs import RunReport, publish_report

    dump = {"tracking": {"uri": f"http://{TOKEN}@mlflow.example:5999", "experiment": "adrank"},
            "runs": [{"error": f"ConnectionError: HTTPConnectionPool: url: https://u:{TOKEN}@h/api/2.0 (refused)"}],
            "paths": ["file:///srv/ml@runs", "s3a://bucket/t"]}
    clean = redacted(dump)
    assert clean["tracking"] == {"uri": f"http://{REDACTED}@mlflow.example:5999", "experiment": "adrank"}
    assert clean["runs"] == [{"error": f"ConnectionError: HTTPConnectionPool: url: https://{REDACTED}@h/api/2.0 "
                                       "(refused)"}]
    assert clean["paths"] == dump["paths"]
    assert TOKEN not in to_json(dump)

    report = RunReport("train", figures=dump)
    line = publish_report(None, tiny_config(tmp_path), report, json_line=True)
    stored = (tmp_path / "tables" / "_runs" / f"train-{report.run_id}.json").read_text()
    for text in (line, stored, capsys.readouterr().out):
        assert TOKEN not in text and "mlflow.example:5999" in text

    from adrank.storage import versioned
    from adrank.train.registry import METADATA, MODELS

    folder = tmp_path / "models" / "lr"
    version = versioned.publish(folder, MODELS, lambda _: {"config": dump, "metrics": {"auc": 0.5}})
    metadata = json.loads((folder / f"v{version}" / METADATA).read_text())
    assert metadata["config"]["tracking"]["uri"] == f"http://{REDACTED}@mlflow.example:5999"


@pytest.mark.parametrize("value", ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "s3cr3t value", "ab+c=", "9token"])
def test_a_hadoop_env_value_that_is_not_a_variable_name_is_refused_without_showing_it(tmp_path, value):
    for override in (f"spark.hadoop_env.fs.s3a.secret.key={value}", f"spark.hadoop_env={{fs.s3a.secret.key: '{value}'}}"):
        with pytest.raises(ConfigError) as info:
            tiny_config(tmp_path, override)
        message = str(info.value)
        assert message.startswith("config key 'spark.hadoop_env.fs.s3a.secret.key' must be the NAME of an "
                                  "environment variable")
        assert value not in message and "\n" not in message


def test_a_hadoop_env_variable_is_checked_where_the_session_is_built(tmp_path, monkeypatch):
    """The config loads where the variable is not set (spark-submit.sh's check, CI); building
    the session there is a one-line error naming the key (and the variable, when upper-case)."""
    from adrank.core.errors import InputError
    from adrank.runtime.spark import hadoop_credentials

    monkeypatch.delenv("ADRANK_TEST_UNSET", raising=False)
    monkeypatch.setenv("ADRANK_TEST_EMPTY", "")
    config = tiny_config(tmp_path, "spark.hadoop_env.fs.s3a.secret.key=ADRANK_TEST_UNSET")
    for env_name in ("ADRANK_TEST_UNSET", "ADRANK_TEST_EMPTY"):
        with pytest.raises(InputError) as info:
            hadoop_credentials({"fs.s3a.secret.key": env_name})
        assert str(info.value).startswith(f"config key 'spark.hadoop_env.fs.s3a.secret.key' names the environment "
                                          f"variable {env_name}, which is not set")
    with pytest.raises(InputError, match="'spark.hadoop_env.fs.s3a.secret.key' names the environment variable "
                                         "ADRANK_TEST_UNSET"):
        hadoop_credentials(config.spark.hadoop_env)  # the loaded config: validated, not yet usable here
    lower_case_token = "ghp_s3cr3tT0ken"  # a variable name by its letters, but more likely a pasted token
    with pytest.raises(InputError) as info:
        hadoop_credentials({"fs.s3a.secret.key": lower_case_token})
    assert "'spark.hadoop_env.fs.s3a.secret.key'" in str(info.value) and lower_case_token not in str(info.value)


def test_a_job_with_an_unset_hadoop_env_variable_fails_in_one_line_before_spark_starts(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ADRANK_TEST_UNSET"}
    result = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "generate_data.py"), "--conf-file", str(TINY_CONF),
         "--set", f"storage.root={tmp_path}", "--set", "spark.hadoop_env.fs.s3a.secret.key=ADRANK_TEST_UNSET"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "generate_data: error: config key 'spark.hadoop_env.fs.s3a.secret.key' names the environment variable "
        "ADRANK_TEST_UNSET, which is not set (or empty) where the Spark driver runs: export it there, or remove "
        "the key"]

"""The one place a SparkSession is made: Delta extension and catalog, small local defaults.

Used by every job and by the test fixture. Three ways a job runs:

* from ``spark-submit`` (``spark-submit.sh``): the submitter set the master and shipped the
  Delta jars; this module adds only SQL settings;
* on a platform that already holds a session (Databricks-style scheduled jobs): that
  session is reused as it is;
* from plain Python (tests, notebooks): the master comes from config and the Delta jars
  from the bootstrap's cache (``.cache/jars``) or, failing that, from Maven via Ivy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from pyspark.sql import SparkSession

from adrank.core.config import SparkConfig
from adrank.core.errors import InputError
from adrank.runtime import console

DELTA_SQL_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
LOCAL_DEFAULTS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.python.worker.reuse": "true",
}
REPO_ROOT = Path(__file__).resolve().parents[2]
CONVENTIONAL_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
# Spark's own redaction of the UI's environment page, the event log and its logs, widened
# from its default (secret|password|token|access.key) to the credential keys of
# adrank.core.config.is_credential_key: hadoop_env puts credentials in spark.hadoop.* settings.
# It also hides settings that merely name a credential (``*.credentials.*.enabled``): harmless.
REDACTION_REGEX = r"(?i)secret|password|token|credential|access[.]?key|account[.]key[.]|encryption[.]key$|private[.]key$|[.]sas[.]"


def build_spark(cfg: SparkConfig, app_name: str | None = None) -> SparkSession:
    """Return the SparkSession for a job, creating it if none is active.

    Args:
        cfg: the ``spark`` section of the config.
        app_name: shown in the Spark UI; defaults to ``cfg.app_name``.

    Raises:
        InputError: a variable named in ``cfg.hadoop_env`` is not set (one line naming the key).
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name or cfg.app_name)
    if not launched_by_spark_submit():
        builder = builder.master(cfg.master).config("spark.driver.memory", cfg.driver_memory)
        builder = _with_delta_jars(builder)
    settings = {
        **LOCAL_DEFAULTS, **DELTA_SQL_CONF, "spark.redaction.regex": REDACTION_REGEX,
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
    }
    if console.env_log_file():  # spark-submit.sh's filter shows the bar and logs the rest
        settings["spark.ui.showConsoleProgress"] = "true"
    settings.update(cfg.conf)
    settings.update(hadoop_credentials(cfg.hadoop_env))
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def launched_by_spark_submit() -> bool:
    """True when this Python driver was started by spark-submit (the JVM already runs)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def delta_jars(jars_dir: Path | None = None) -> list[Path]:
    """The Delta jars the bootstrap cached (empty if it has not run)."""
    folder = jars_dir or Path(os.environ.get("ADRANK_JARS_DIR", REPO_ROOT / ".cache" / "jars"))
    return sorted(folder.glob("delta-*.jar"))


def _with_delta_jars(builder: SparkSession.Builder) -> SparkSession.Builder:
    jars = delta_jars()
    if jars:
        return builder.config("spark.jars", ",".join(str(j) for j in jars))
    from delta import configure_spark_with_delta_pip

    return configure_spark_with_delta_pip(builder)


def hadoop_credentials(hadoop_env: Mapping[str, str]) -> dict[str, str]:
    """Map ``fs.s3a.access.key -> ENV_NAME`` to Spark settings, reading values from the env.

    Raises:
        InputError: a named variable is unset or empty here (the machine that needs the
            secret: the config is validated elsewhere too, see ``adrank.core.config.validate``).
    """
    settings = {}
    for hadoop_key, env_name in hadoop_env.items():
        value = os.environ.get(env_name)
        if not value:
            raise InputError(_unset_variable_line(hadoop_key, env_name))
        settings[f"spark.hadoop.{hadoop_key}"] = value
    return settings


def _unset_variable_line(hadoop_key: str, env_name: str) -> str:
    """The error line of an unset variable: its name only when it reads like one (upper case),
    since a lower- or mixed-case "name" may be a pasted token."""
    shown = env_name if CONVENTIONAL_ENV_NAME.fullmatch(env_name) else "(not shown: not an upper-case name)"
    return (f"config key 'spark.hadoop_env.{hadoop_key}' names the environment variable {shown}, which is not "
            "set (or empty) where the Spark driver runs: export it there, or remove the key")

"""Typed, frozen configuration: YAML file + ``--set key=value`` overrides, validated once.

The config is parsed before any Spark or TensorFlow start-up. An unknown key, a value of
the wrong type or a missing required value raises :class:`ConfigError` with a one-line
message naming the key; jobs turn it into exit status 2.

Values are YAML, read by the schema: a number or a date for a ``str`` key keeps the text
it was written as (``--set sample.start_date=2026-11-05``); a boolean, a list or a mapping
for it is refused.

Credentials never live in the config: ``spark.hadoop_env`` maps a Hadoop property to the
*name* of an environment variable, read when the SparkSession is built. The keys under
``spark.conf`` and ``spark.hadoop_env`` are literal (``--set spark.conf.spark.sql.x=1`` sets
the key ``spark.sql.x``); a ``spark.conf`` key that holds a credential
(:func:`is_credential_key`) is rejected, and so is a ``tracking.uri`` with user-info
(``http://<token>@host``). Every dump of a config or a report goes through :func:`to_json`,
which replaces the values of credential keys and the user-info of URIs (:func:`redacted`)
and writes NaN as null.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import fnmatch
import json
import math
import numbers
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MAX_BINARY_FILE_BYTES = 2**31 - 1  # Spark's binaryFile source reads no file longer than this
# Which keys HOLD a credential (rejected in ``spark.conf``, their values redacted in every
# dump): see :func:`is_credential_key`. A key is read as words, split at ``.``, ``-``, ``_``
# and camelCase, in any case (``spark.ssl.keyStorePassword`` -> spark ssl key store password).
SECRET_WORDS = frozenset({"secret", "secrets", "password", "passwords", "passwd", "passphrase",
                          "token", "tokens", "credential", "credentials", "sas"})
# ``<qualifier> key`` is a key that holds one (``fs.s3a.access.key``, ``fs.azure.account.key.<account>``);
# a bare ``key`` is not (``spark.sql.mapKeyDedupPolicy``).
SECRET_KEY_QUALIFIERS = frozenset({"secret", "access", "account", "encryption", "private", "session", "api",
                                   "master", "signing", "storage", "shared"})
# A key whose LAST word is one of these holds a setting about a credential, not the
# credential: a switch, a class name, a file or path, a number (``*.enabled``, ``*.provider``,
# ``spark.authenticate.secret.file``, ``spark.io.encryption.keySizeBits``).
SETTING_WORDS = frozenset({"enabled", "enable", "disabled", "disable", "provider", "providers", "type", "class",
                           "classes", "impl", "binding", "file", "path", "dir", "location", "ratio", "wait",
                           "interval", "period", "timeout", "ttl", "bits", "length", "size", "algorithm", "mode"})
# Keys whose values name a Kubernetes secret (mount path, secret:key), never hold one.
SECRET_REFERENCE_PATTERNS = ("spark.kubernetes.driver.secrets.*", "spark.kubernetes.executor.secrets.*",
                             "spark.kubernetes.driver.secretkeyref.*", "spark.kubernetes.executor.secretkeyref.*")
REDACTED = "***redacted***"
# A mapping whose values are environment variable NAMES: shown, never redacted.
ENV_NAME_MAPPINGS = ("hadoop_env",)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The user-info of a URI (``scheme://<user-info>@host``): a token or user:password.
URI_USER_INFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]{0,31}://)[^/?#@\s]*@")  # a scheme: at most 32 characters
MLFLOW_CREDENTIALS_HINT = ("pass the token in MLFLOW_TRACKING_TOKEN (or MLFLOW_TRACKING_USERNAME and "
                           "MLFLOW_TRACKING_PASSWORD; DATABRICKS_TOKEN for databricks), never in the config")


class ConfigError(ValueError):
    """A configuration problem; its message names the offending key."""


@dataclass(frozen=True)
class SparkConfig:
    """How the SparkSession is built (the submitter's settings win on a cluster)."""

    master: str = "local[2]"
    app_name: str = "adrank"
    shuffle_partitions: int = 4
    driver_memory: str = "2g"
    conf: Mapping[str, str] = field(default_factory=dict)
    hadoop_env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StorageConfig:
    """Where Delta tables live: ``<root>/<table>``; job reports under ``<root>/_runs``.

    ``local_root`` holds what is not a table and is read and written with plain file
    operations (atomic renames, ``flock``, TensorFlow's own I/O): the model registry,
    training checkpoints and serving snapshots. It must be an absolute path mounted at the
    same place on the driver and every executor (e.g. NFS). Empty: ``root``, which must
    then be local; an object-store ``root`` (``s3a://``...) requires it.
    """

    root: str
    local_root: str = ""

    @property
    def local(self) -> str:
        """The folder of the registry, checkpoints and serving snapshots (see the class doc)."""
        return self.local_root or self.root


@dataclass(frozen=True)
class InputsConfig:
    """Where raw inputs live (the layout of the README's input contracts)."""

    root: str


@dataclass(frozen=True)
class SampleConfig:
    """Sizes and seed of the sample-data generator."""

    seed: int = 7
    num_skus: int = 5000
    num_users: int = 2000
    num_impressions: int = 200_000
    num_days: int = 7
    start_date: str = "2026-11-01"
    num_categories: int = 16
    cold_start_fraction: float = 0.03
    image_min_size: int = 64
    image_max_size: int = 128
    broken_per_kind: int = 3
    rows_per_partition: int = 50_000


@dataclass(frozen=True)
class FeaturesConfig:
    """How build_tables turns raw inputs into feature tables."""

    image_size: int = 64
    image_store_format: str = "PNG"
    max_image_pixels: int = 40_000_000
    max_image_bytes: int = 64 << 20  # larger image files are never read (Spark's binaryFile holds < 2 GiB)
    hash_bits: int = 20
    max_sparse_ids: int = 32
    crosses: tuple[str, ...] = ("page*ad_category", "device*hour")
    # The feed's context embedding (stage 3, recommend): the recency-weighted mean of the
    # embeddings of the user's clicks strictly before the impression (adrank.context.behaviour).
    behaviour_half_life_hours: float = 72.0
    behaviour_max_clicks: int = 20
    behaviour_lookback_days: int = 30


@dataclass(frozen=True)
class TrainConfig:
    """Horovod training: ranks, towers, batch sizes, steps, optimisers, checkpoints."""

    ranks: int = 2
    threads_per_rank: int = 1
    launcher: str = "auto"
    tower: str = "mini_inception"
    tower_width: int = 16
    embedding_dim: int = 32
    pair_batch_size: int = 64
    lr_batch_size: int = 1024
    pair_steps: int = 300
    lr_steps: int = 300
    dense_learning_rate: float = 0.001
    ftrl_learning_rate: float = 0.05
    gradient_mode: str = "split"
    # Stage 3 (joint): the LR plus an interaction of context and ad embeddings.
    interaction: str = "all"
    finetune_cnn: bool = False
    joint_steps: int = 300
    joint_batch_size: int = 1024
    joint_dense_learning_rate: float = 0.01
    dnn_hidden: int = 32
    checkpoint_every: int = 100
    holdout_days: int = 1
    # Held-out rows the ranks score at every checkpoint (the training curve's held-out
    # metric; read once, split over the ranks); 0 = no held-out curve.
    holdout_curve_rows: int = 1024
    registry_folder: str = "models"
    # On every rank: the seed (Python, numpy, TensorFlow), the loss log interval (steps),
    # the step watchdog (seconds, 0 = off), op determinism, and the TensorBoard folder
    # ("" = <checkpoint dir>/tensorboard).
    seed: int = 0
    log_every: int = 10
    step_timeout_s: float = 900.0
    deterministic: bool = False
    tensorboard_dir: str = ""


@dataclass(frozen=True)
class EmbedConfig:
    """embed_catalog: the CNN's batch size, the Spark partitions it runs in, serving snapshots,
    and when ``sku_embeddings`` is compacted (OPTIMIZE once the runs since the last one added
    ``compact_after_files_added`` data files; 0 = never)."""

    batch_size: int = 256
    partitions: int = 0
    serving_folder: str = "serving/sku_embeddings"
    serving_keep: int = 3
    staging_folder: str = "_staging"
    compact_after_files_added: int = 64


@dataclass(frozen=True)
class RecommendConfig:
    """recommend: the top ``k`` SKUs by cosine similarity of embeddings, for SKUs, users and queries.

    Up to ``exact_max_skus`` SKUs the search is exact (every catalog block against every
    query block); above it, an inverted-file index (Spark ML ``KMeans`` into ``ivf_lists``
    clusters, 0 = about sqrt(SKUs), fitted on ``ivf_train_per_list`` SKUs per cluster;
    ``ivf_nprobe`` of them searched per query), with its recall@10 against exact search
    measured on ``recall_sample`` SKUs. ``query_block`` and ``catalog_block`` bound the score matrix one Python worker holds (memory per task).
    Users active and queries seen in the last ``lookback_days`` get recommendations: the
    best ``k`` of their ``candidates`` nearest SKUs and the ``popular_candidates`` most
    clicked ones, by cosine + ``popularity_weight`` x a popularity prior in [0, 1]
    (0 = the embedding's order alone). Similar SKUs are the nearest by cosine after a PCA
    whitening fitted on the catalog, each direction scaled by ``variance ** -power/2`` with
    ``whitening_power`` (0 = plain cosine).
    """

    k: int = 10
    candidates: int = 100
    popular_candidates: int = 100
    popularity_weight: float = 1.0
    whitening_power: float = 0.5
    exact_max_skus: int = 20_000
    ivf_lists: int = 0
    ivf_nprobe: int = 16
    ivf_train_per_list: int = 64
    ivf_max_iterations: int = 10
    recall_sample: int = 1000
    query_block: int = 512
    catalog_block: int = 8192
    lookback_days: int = 7
    index_folder: str = "_index/recommend"


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking of training (:mod:`adrank.runtime.tracking`): one MLflow run per (run id, stage).

    ``uri`` is the MLflow tracking URI (``http(s)://``, ``databricks``, ``sqlite:///``...); empty =
    the SQLite database ``sqlite:///<storage.local>/mlflow.db`` (a shared server on clusters).
    ``enabled: false`` logs nothing.
    Credentials never go here: MLflow reads them from its own environment variables
    (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``/``TOKEN``, ``DATABRICKS_TOKEN``).
    """

    uri: str = ""
    enabled: bool = True
    experiment: str = "adrank"


@dataclass(frozen=True)
class Config:
    """The whole adrank configuration."""

    storage: StorageConfig
    inputs: InputsConfig
    spark: SparkConfig = field(default_factory=SparkConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config file, apply ``key=value`` overrides and validate.

    Args:
        path: YAML file; ``None`` starts from an empty mapping.
        overrides: ``a.b=c`` strings; values are parsed as YAML scalars.

    Returns:
        The frozen, validated :class:`Config`.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type, missing value.
    """
    raw = _read_yaml(path) if path else {}
    for item in overrides:
        _apply_override(raw, item)
    config = _build(Config, raw, prefix="")
    _validate(config)
    return _with_absolute_local_roots(config)


def _with_absolute_local_roots(config: Config) -> Config:
    """Local roots become absolute (relative to the current directory) once, at load time,
    so every reader and writer (Spark, Delta, delta-rs, Horovod ranks) sees the same path."""

    def absolute(root: str) -> str:
        return root if "://" in root or root.startswith("file:") else os.path.abspath(root)

    return dataclasses.replace(
        config,
        storage=dataclasses.replace(config.storage, root=absolute(config.storage.root)),
        inputs=dataclasses.replace(config.inputs, root=absolute(config.inputs.root)),
    )


def resolve_config_path(path: str) -> Path:
    """Find a config file given on the command line, or shipped by ``--files``.

    In cluster deploy mode the file arrives in the driver's working directory under its
    base name, so that is tried when the path itself does not exist.
    """
    candidates = [Path(path), Path.cwd() / Path(path).name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config file not found: {path}")


class _IntText(int):
    """A YAML int that keeps the text it was written as (``010``, ``0x1F``, ``1_000``)."""

    text: str


class _FloatText(float):
    """A YAML float that keeps the text it was written as (``1.10``, ``1.0e+3``)."""

    text: str


class _ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader for config text: a date stays text, a number remembers its text.

    The schema decides what a scalar means: a number for a ``str`` field (``tracking.experiment:
    1.10``) keeps its text, a date (``sample.start_date: 2026-11-05``) is the text it was written as.
    """


def _number_with_text(tag: str, kind: type[_IntText] | type[_FloatText]) -> Any:
    """A constructor of ``tag`` making ``kind``: YAML's number, with the node's text."""
    construct = yaml.SafeLoader.yaml_constructors[tag]

    def construct_with_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
        number = kind(construct(loader, node))
        number.text = str(node.value)
        return number

    return construct_with_text


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _kind in (("tag:yaml.org,2002:int", _IntText), ("tag:yaml.org,2002:float", _FloatText)):
    _ConfigLoader.add_constructor(_tag, _number_with_text(_tag, _kind))


def _parse_yaml(text: str) -> Any:
    """Config YAML (a file or a ``--set`` value) with :class:`_ConfigLoader`."""
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: plain data only


def _read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = _parse_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc.problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override '{item}' must look like key=value")
    parts = _override_path(key)
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{key}': '{part}' is not a section")
        node = child
    node[parts[-1]] = _parse_yaml(text) if text else ""


def _override_path(key: str) -> list[str]:
    """The path of a dotted override key; below a mapping field the rest is one literal key.

    ``spark.conf.spark.sql.shuffle.partitions`` -> ``["spark", "conf",
    "spark.sql.shuffle.partitions"]``: Spark and Hadoop keys contain dots themselves.
    """
    parts = key.split(".")
    cls: Any = Config
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls) or part not in {f.name for f in dataclasses.fields(cls)}:
            break  # an unknown key: _build names it
        hint = typing.get_type_hints(cls)[part]
        if typing.get_origin(hint) in (collections.abc.Mapping, dict) and i + 1 < len(parts):
            return [*parts[: i + 1], ".".join(parts[i + 1 :])]
        cls = hint
    return parts


def _build(cls: Any, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"'{prefix.rstrip('.') or 'config'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(f"unknown config key '{prefix}{key}'")
    values = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.name in raw:
            values[f.name] = _coerce(hints[f.name], raw[f.name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            if dataclasses.is_dataclass(hints[f.name]):
                values[f.name] = _build(hints[f.name], {}, key + ".")
            else:
                raise ConfigError(f"missing required config key '{key}'")
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value if value is not None else {}, key + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return None if value is None else _coerce(options[0], value, key)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"config key '{key}' must be a list, got {type(value).__name__}")
        item_type = typing.get_args(hint)[0]
        return tuple(_scalar(item_type, item, f"{key}[{i}]") for i, item in enumerate(value))
    if origin in (collections.abc.Mapping, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
        for k, v in value.items():
            if isinstance(v, (dict, list)) or not str(k):
                raise ConfigError(
                    f"config key '{key}.{k}' must be a single value: keys under '{key}' are literal "
                    f"(write the whole key, e.g. {key}: {{spark.sql.shuffle.partitions: 4}})"
                )
        return types.MappingProxyType({str(k): _text(v) for k, v in value.items()})
    return _scalar(hint, value, key)


def _scalar(hint: type, value: Any, key: str) -> Any:
    """``value`` as the field's type: a number for a ``str`` keeps the text it was written as.

    A boolean for a ``str`` is refused: YAML reads ``yes``/``no``/``on``/``off``/``true`` as
    one, and adrank's strings are names, paths and choices, where a boolean is a mistake
    (quoted, the word is kept).
    """
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, int | float | datetime.date) and not isinstance(value, bool):
        return _text(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        quote = (" (YAML reads yes/no/on/off/true/false as a boolean: quote the word to mean it)"
                 if hint is str and isinstance(value, bool) else "")
        raise ConfigError(
            f"config key '{key}' must be {hint.__name__}, got {_type_name(value)} {value!r}{quote}"
        )
    return hint(value) if hint in (int, float) else value  # a plain number, not the text-keeping subclass


def _type_name(value: Any) -> str:
    """The YAML type of a value for an error line (``int`` for an :class:`_IntText`)."""
    return "int" if isinstance(value, _IntText) else "float" if isinstance(value, _FloatText) else type(value).__name__


def _text(value: Any) -> str:
    """A YAML scalar as the text it was written as (:class:`_ConfigLoader`); a boolean as
    ``true``/``false`` (Spark's and Hadoop's spelling), a date in ISO form."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(getattr(value, "text", value))


def _validate(config: Config) -> None:
    sample = config.sample
    _require(sample.num_skus >= 10, "sample.num_skus", "must be at least 10")
    _require(
        sample.num_skus >= 2 * sample.num_categories, "sample.num_skus", "must be at least 2 x sample.num_categories"
    )
    _require(sample.num_users >= 1, "sample.num_users", "must be at least 1")
    _require(sample.num_impressions >= 100, "sample.num_impressions", "must be at least 100")
    _require(sample.num_days >= 2, "sample.num_days", "must be at least 2 (the last day is held out)")
    _require(2 <= sample.num_categories <= 36, "sample.num_categories", "must be in 2..36")
    _require(0 <= sample.cold_start_fraction < 0.5, "sample.cold_start_fraction", "must be in [0, 0.5)")
    _require(
        16 <= sample.image_min_size <= sample.image_max_size,
        "sample.image_min_size",
        "must be >= 16 and <= sample.image_max_size",
    )
    _require(sample.rows_per_partition >= 100, "sample.rows_per_partition", "must be at least 100")
    _check_date(sample.start_date, "sample.start_date")
    _validate_features(config.features)
    _validate_train(config.train)
    _validate_embed(config.embed)
    _validate_recommend(config.recommend)
    _validate_tracking(config.tracking)
    _require(bool(config.storage.root), "storage.root", "must not be empty")
    _validate_local_root(config.storage)
    _require(bool(config.inputs.root), "inputs.root", "must not be empty")
    _validate_spark(config.spark)


def _validate_spark(spark: SparkConfig) -> None:
    """No credential in ``spark.conf``; ``spark.hadoop_env`` values are environment variable names.

    Whether each named variable is set is checked where the secrets are read, when the
    SparkSession is built (:func:`adrank.runtime.spark.build_spark`): the config is validated on
    machines that do not hold them too (``spark-submit.sh`` before submitting, CI).
    """
    for name in spark.conf:
        _require(
            not is_credential_key(name),
            f"spark.conf.{name}",
            "looks like a credential: never put its value in the config; map the Hadoop "
            "property to the name of an environment variable in spark.hadoop_env",
        )
    for name, env_name in spark.hadoop_env.items():
        _require(  # the value is not echoed: what is not a variable name may be the secret itself
            ENV_NAME.fullmatch(env_name) is not None, f"spark.hadoop_env.{name}",
            "must be the NAME of an environment variable ([A-Za-z_][A-Za-z0-9_]*) that holds the value, "
            "never the value itself (not shown)",
        )


def _validate_features(features: FeaturesConfig) -> None:
    _require(16 <= features.image_size <= 512, "features.image_size", "must be in 16..512")
    _require(
        features.image_store_format in ("PNG", "JPEG"), "features.image_store_format", "must be PNG or JPEG"
    )
    _require(features.max_image_pixels >= 1_000_000, "features.max_image_pixels", "must be at least 1000000")
    _require(1024 <= features.max_image_bytes <= MAX_BINARY_FILE_BYTES, "features.max_image_bytes",
             f"must be in 1024..{MAX_BINARY_FILE_BYTES} (below 2 GiB: the most Spark reads of one file)")
    _require(8 <= features.hash_bits <= 30, "features.hash_bits", "must be in 8..30")
    _require(features.max_sparse_ids >= 1, "features.max_sparse_ids", "must be at least 1")
    _require(features.behaviour_half_life_hours > 0, "features.behaviour_half_life_hours", "must be above 0")
    for key in ("behaviour_max_clicks", "behaviour_lookback_days"):
        _require(getattr(features, key) >= 1, f"features.{key}", "must be at least 1")
    for i, cross in enumerate(features.crosses):
        _require(
            len([p for p in cross.split("*") if p]) >= 2,
            f"features.crosses[{i}]",
            f"must name two or more features joined by '*', got {cross!r}",
        )


def _validate_recommend(recommend: RecommendConfig) -> None:
    _require(recommend.candidates >= recommend.k, "recommend.candidates", "must be at least recommend.k")
    _require(recommend.popularity_weight >= 0, "recommend.popularity_weight", "must be at least 0")
    _require(0 <= recommend.whitening_power <= 1, "recommend.whitening_power", "must be in 0..1")
    _require(recommend.popular_candidates >= 0, "recommend.popular_candidates", "must be at least 0")
    for key in ("k", "ivf_nprobe", "recall_sample", "query_block", "catalog_block", "lookback_days",
                "ivf_max_iterations"):
        _require(getattr(recommend, key) >= 1, f"recommend.{key}", "must be at least 1")
    _require(recommend.exact_max_skus >= 0, "recommend.exact_max_skus", "must be at least 0")
    _require(recommend.ivf_lists >= 0, "recommend.ivf_lists", "must be at least 0 (0 = about sqrt(SKUs))")
    _require(recommend.ivf_train_per_list >= 4, "recommend.ivf_train_per_list", "must be at least 4")
    _require(bool(recommend.index_folder.strip("/")), "recommend.index_folder", "must not be empty")


def _validate_train(train: TrainConfig) -> None:
    _require(1 <= train.ranks <= 64, "train.ranks", "must be in 1..64")
    _require(train.threads_per_rank >= 1, "train.threads_per_rank", "must be at least 1")
    _require(train.launcher in ("auto", "horovodrun", "spark"), "train.launcher", "must be auto, horovodrun or spark")
    _require(train.tower in ("mini_inception", "inception_v3"), "train.tower", "must be mini_inception or inception_v3")
    _require(
        train.gradient_mode in ("split", "sparse_as_dense", "horovod_default"),
        "train.gradient_mode",
        "must be split, sparse_as_dense or horovod_default",
    )
    _require(train.interaction in ("dot", "product", "dnn", "all"), "train.interaction",
             "must be dot, product, dnn or all")
    _require(train.joint_dense_learning_rate > 0, "train.joint_dense_learning_rate", "must be above 0")
    for key in ("pair_batch_size", "lr_batch_size", "pair_steps", "lr_steps", "checkpoint_every", "embedding_dim",
                "joint_steps", "joint_batch_size", "dnn_hidden"):
        _require(getattr(train, key) >= 1, f"train.{key}", "must be at least 1")
    _require(train.holdout_days >= 1, "train.holdout_days", "must be at least 1")
    _require(train.holdout_curve_rows >= 0, "train.holdout_curve_rows", "must be at least 0 (0 = no held-out curve)")
    _require(train.seed >= 0, "train.seed", "must be at least 0")
    _require(train.log_every >= 1, "train.log_every", "must be at least 1")
    _require(train.step_timeout_s >= 0, "train.step_timeout_s", "must be at least 0 (0 = no step watchdog)")


def _validate_local_root(storage: StorageConfig) -> None:
    if storage.local_root:
        _require(os.path.isabs(storage.local_root) and "://" not in storage.local_root, "storage.local_root",
                 f"must be an absolute local path (mounted on the driver and every executor), "
                 f"got {storage.local_root!r}")
        return
    _require(not _is_remote(storage.root), "storage.local_root",
             f"must be set when storage.root is {storage.root!r}: the model registry, checkpoints and "
             "serving snapshots need an absolute path mounted on the driver and every executor (e.g. NFS)")


def _is_remote(root: str) -> bool:
    """A URI other than ``file:`` (``s3a://``, ``abfss://``, ``hdfs://``...)."""
    return "://" in root and not root.startswith("file:")


def _validate_embed(embed: EmbedConfig) -> None:
    _require(1 <= embed.batch_size <= 65536, "embed.batch_size", "must be in 1..65536")
    _require(embed.partitions >= 0, "embed.partitions", "must be 0 (one per core) or more")
    _require(embed.serving_keep >= 1, "embed.serving_keep", "must be at least 1")
    _require(embed.compact_after_files_added >= 0, "embed.compact_after_files_added",
             "must be 0 (never compact) or more")
    for key, base in (("serving_folder", "storage.local_root"), ("staging_folder", "storage.root")):
        folder = getattr(embed, key)
        _require(bool(folder.strip("/")) and ".." not in folder.split("/") and "://" not in folder,
                 f"embed.{key}", f"must be a folder below {base}, got {folder!r}")


def _validate_tracking(tracking: TrackingConfig) -> None:
    uri = tracking.uri
    _require(not _has_user_info(uri), "tracking.uri",
             f"carries user-info (a token or user:password before '@'; not shown): {MLFLOW_CREDENTIALS_HINT}")
    _require(uri == uri.strip() and not any(c.isspace() for c in uri), "tracking.uri", "must not contain spaces")
    _require(not uri or uri == "databricks" or os.path.isabs(uri) or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", uri)
             is not None, "tracking.uri",
             f"must be empty (a local file store), 'databricks', an absolute path or a URI with a scheme, got {uri!r}")
    _require(bool(tracking.experiment.strip()), "tracking.experiment", "must not be empty")


def _has_user_info(uri: str) -> bool:
    """Whether the authority of ``uri`` (after ``scheme://``, or from the start without one, up to
    the first ``/``, ``?`` or ``#``) holds an ``@``: ``http://<token>@host``, ``<token>@host:5999``."""
    rest = uri.split("://", 1)[-1]
    return "@" in re.split(r"[/?#]", rest, maxsplit=1)[0]


def _check_date(text: str, key: str) -> None:
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"config key '{key}' must be an ISO date (YYYY-MM-DD), got {text!r}") from None


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}' {message}")


def get_value(config: Config, dotted: str) -> Any:
    """Return the value at a dotted key (e.g. ``spark.master``) of a loaded config."""
    node: Any = config
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            raise ConfigError(f"unknown config key '{dotted}'")
        node = getattr(node, part)
    return node


def config_as_dict(config: Any) -> Any:
    """A loaded config as plain JSON-able dicts, lists and scalars (for metadata)."""
    if dataclasses.is_dataclass(config):
        return {f.name: config_as_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, collections.abc.Mapping):
        return {str(k): config_as_dict(v) for k, v in config.items()}
    if isinstance(config, tuple | list):
        return [config_as_dict(v) for v in config]
    return config


def is_credential_key(name: Any) -> bool:
    """True when a key (a Spark or Hadoop property, any case) HOLDS a credential.

    It does when one of its words (:func:`key_words`) is in :data:`SECRET_WORDS` or two
    adjacent ones are ``<qualifier> key`` (:data:`SECRET_KEY_QUALIFIERS`), unless its last
    word is in :data:`SETTING_WORDS` (``spark.security.credentials.hive.enabled``,
    ``fs.s3a.aws.credentials.provider``: settings that name a credential) or it matches
    :data:`SECRET_REFERENCE_PATTERNS`. A host-qualified key (``fs.azure.account.key.<account>
    .dfs.core.windows.net``) ends in a host name, so it is a credential whatever the account.
    """
    words = key_words(name)
    if not words or words[-1] in SETTING_WORDS:
        return False
    if any(fnmatch.fnmatchcase(str(name).lower(), pattern) for pattern in SECRET_REFERENCE_PATTERNS):
        return False
    return any(word in SECRET_WORDS for word in words) or any(
        first in SECRET_KEY_QUALIFIERS and second in ("key", "keys") for first, second in zip(words, words[1:]))


def key_words(name: Any) -> list[str]:
    """The lower-case words of a key: split at ``.``, ``-``, ``_``, camelCase and digits."""
    return [word.lower() for word in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+", str(name))]


def without_uri_user_info(text: str) -> str:
    """``text`` with the user-info of every URI in it (``scheme://<token>@``) replaced by :data:`REDACTED`."""
    return URI_USER_INFO.sub(lambda match: f"{match.group(1)}{REDACTED}@", text)


def redacted(value: Any) -> Any:
    """A copy of a JSON-able value with its credentials replaced by :data:`REDACTED`.

    Mappings anywhere in ``value`` (a config dict, report figures, registry metadata) are
    searched; the value of every key for which :func:`is_credential_key` holds becomes
    :data:`REDACTED`. The values of ``hadoop_env`` (environment variable names) are kept.
    Every string keeps its text but not the user-info of a URI in it
    (:func:`without_uri_user_info`: ``http://<token>@host`` -> ``http://***redacted***@host``).
    """
    if isinstance(value, collections.abc.Mapping):
        return {k: REDACTED if is_credential_key(k) else
                (dict(v) if k in ENV_NAME_MAPPINGS and _is_name_mapping(v) else redacted(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    if isinstance(value, str):
        return without_uri_user_info(value)
    return value


def _is_name_mapping(value: Any) -> bool:
    return isinstance(value, collections.abc.Mapping) and all(isinstance(v, str) for v in value.values())


def _finite(value: Any) -> Any:
    """NaN and infinities -> None, in nested dicts and lists."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, collections.abc.Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def to_json(value: Any, **kwargs: Any) -> str:
    """The one way a config, a report or metadata is dumped: :func:`redacted`, NaN as null.

    Keyword arguments go to :func:`json.dumps` (``default=str`` unless given).
    """
    kwargs.setdefault("default", str)
    plain = config_as_dict(value) if dataclasses.is_dataclass(value) else value
    return json.dumps(_finite(redacted(plain)), allow_nan=False, **kwargs)

"""YAML text -> the schema's dataclasses: parsing, ``--set`` overrides and coercion by type hint.

Values are YAML, read by the schema: a number or a date for a ``str`` key keeps the text
it was written as (``--set sample.start_date=2026-11-05``); a boolean, a list or a mapping
for it is refused. The keys under a mapping field (``spark.conf``, ``spark.hadoop_env``)
are literal: ``--set spark.conf.spark.sql.x=1`` sets the key ``spark.sql.x``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import datetime
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from adrank.core.config.schema import Config, ConfigError


def config_from_mapping(raw: dict[str, Any]) -> Config:
    """A :class:`Config` from parsed YAML (not yet validated): unknown keys, wrong types and
    missing required values raise :class:`ConfigError` naming the key."""
    return _build(Config, raw, prefix="")


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


def parse_yaml(text: str) -> Any:
    """Config YAML (a file or a ``--set`` value) with :class:`_ConfigLoader`."""
    return yaml.load(text, Loader=_ConfigLoader)  # a SafeLoader subclass: plain data only


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = parse_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc.problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def apply_override(raw: dict[str, Any], item: str) -> None:
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
    node[parts[-1]] = parse_yaml(text) if text else ""


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

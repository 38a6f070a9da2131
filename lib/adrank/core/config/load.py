"""Loading the config: a YAML file + ``--set key=value`` overrides, built, validated and made absolute.

The config is parsed before any Spark or TensorFlow start-up; a problem raises
:class:`ConfigError` naming the key (jobs turn it into exit status 2).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adrank.core.config.schema import Config, ConfigError
from adrank.core.config.validate import validate
from adrank.core.config.yaml_values import apply_override, config_from_mapping, read_yaml


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
    raw = read_yaml(path) if path else {}
    for item in overrides:
        apply_override(raw, item)
    config = config_from_mapping(raw)
    validate(config)
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

def get_value(config: Config, dotted: str) -> Any:
    """Return the value at a dotted key (e.g. ``spark.master``) of a loaded config."""
    node: Any = config
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node) or part not in {f.name for f in dataclasses.fields(node)}:
            raise ConfigError(f"unknown config key '{dotted}'")
        node = getattr(node, part)
    return node

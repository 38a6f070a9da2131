"""Typed, frozen configuration: YAML file + ``--set key=value`` overrides, validated once.

The config is parsed before any Spark or TensorFlow start-up. An unknown key, a value of
the wrong type or a missing required value raises :class:`ConfigError` with a one-line
message naming the key; jobs turn it into exit status 2.

One module per concern; import from this package, which re-exports the public API:

- :mod:`.schema`: the frozen dataclasses (one per section) and :class:`ConfigError`;
- :mod:`.yaml_values`: YAML text and ``--set`` overrides read into the schema by type hint;
- :mod:`.validate`: ranges, choices, dates, and no credential in the config;
- :mod:`.redact`: :func:`to_json`, the one way a config or a report is dumped (credentials
  and URI user-info redacted, NaN as null);
- :mod:`.load`: :func:`load_config`, :func:`resolve_config_path`, :func:`get_value`.
"""

from adrank.core.config.load import get_value, load_config, resolve_config_path
from adrank.core.config.redact import (
    REDACTED,
    config_as_dict,
    is_credential_key,
    key_words,
    redacted,
    to_json,
    without_uri_user_info,
)
from adrank.core.config.schema import (
    Config,
    ConfigError,
    EmbedConfig,
    FeaturesConfig,
    InputsConfig,
    RecommendConfig,
    SampleConfig,
    SparkConfig,
    StorageConfig,
    TrackingConfig,
    TrainConfig,
)
from adrank.core.config.validate import MAX_BINARY_FILE_BYTES

__all__ = [
    "MAX_BINARY_FILE_BYTES",
    "REDACTED",
    "Config",
    "ConfigError",
    "EmbedConfig",
    "FeaturesConfig",
    "InputsConfig",
    "RecommendConfig",
    "SampleConfig",
    "SparkConfig",
    "StorageConfig",
    "TrackingConfig",
    "TrainConfig",
    "config_as_dict",
    "get_value",
    "is_credential_key",
    "key_words",
    "load_config",
    "redacted",
    "resolve_config_path",
    "to_json",
    "without_uri_user_info",
]

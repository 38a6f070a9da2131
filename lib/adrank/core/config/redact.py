"""JSON dumps of a config, a report or metadata, with credentials and URI user-info redacted.

Credentials never live in the config: ``spark.hadoop_env`` maps a Hadoop property to the
*name* of an environment variable, read when the SparkSession is built. Every dump goes
through :func:`to_json`, which replaces the values of credential keys
(:func:`is_credential_key`) and the user-info of URIs (:func:`redacted`) and writes NaN as null.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import fnmatch
import json
import math
import numbers
import re
from typing import Any

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
# The user-info of a URI (``scheme://<user-info>@host``): a token or user:password.
URI_USER_INFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]{0,31}://)[^/?#@\s]*@")  # a scheme: at most 32 characters


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

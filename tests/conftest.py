"""Shared test fixtures: the adrank.testing plugin's, under the names the tests use.

``spark`` is the plugin's ``adrank_spark`` (one SparkSession with Delta for the whole
session), ``config`` its ``adrank_config`` (tiny, under this test's folder), and
``tiny_config`` its helper: the suite uses the same fixtures users get. The plugin is
loaded here for runs from the source tree; when adrank is installed with its ``pytest11``
entry point (named ``adrank.testing`` too) pytest finds it registered already.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from adrank.config import Config

pytest_plugins = ["adrank.testing", "pytester"]

REPO = Path(__file__).resolve().parents[1]
TINY_CONF = REPO / "conf" / "tiny.yaml"

__all__ = ["REPO", "TINY_CONF", "config", "load_job", "spark", "tiny_config"]


def tiny_config(root: Path, *overrides: str) -> Config:
    """The tiny test config with storage and inputs under ``root`` (:func:`adrank.testing.tiny_config`)."""
    from adrank.testing import tiny_config as plugin_tiny_config  # not before pytest imports the plugin

    return plugin_tiny_config(root, *overrides)


def load_job(name: str) -> ModuleType:
    """``jobs/<name>.py`` as a module (jobs/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_job", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def spark(adrank_spark):
    """The one SparkSession of the test session (local[2], Delta, tiny settings)."""
    return adrank_spark


@pytest.fixture
def config(adrank_config) -> Config:
    """A tiny config whose tables and inputs live in this test's own folder."""
    return adrank_config

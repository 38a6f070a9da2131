"""Shared test fixtures: one SparkSession with Delta for the whole session, tiny configs."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from adrank.config import Config, load_config

REPO = Path(__file__).resolve().parents[1]
TINY_CONF = REPO / "conf" / "tiny.yaml"


def tiny_config(root: Path, *overrides: str) -> Config:
    """The tiny test config with storage and inputs under ``root``."""
    return load_config(
        TINY_CONF,
        [f"storage.root={root / 'tables'}", f"inputs.root={root / 'inputs'}", *overrides],
    )


def load_job(name: str) -> ModuleType:
    """``jobs/<name>.py`` as a module (jobs/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_job", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """The one SparkSession of the test session (local[2], Delta, tiny settings)."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from adrank.spark import build_spark

    config = tiny_config(tmp_path_factory.mktemp("spark"))
    session = build_spark(config.spark, "adrank-tests")
    yield session
    session.stop()


@pytest.fixture
def config(tmp_path) -> Config:
    """A tiny config whose tables and inputs live in this test's own folder."""
    return tiny_config(tmp_path)

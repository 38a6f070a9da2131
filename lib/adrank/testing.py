"""A pytest plugin for testing your own transforms and jobs around adrank.

Installed with the package (entry point ``pytest11``: ``adrank.testing``), or loaded by a
conftest with ``pytest_plugins = ["adrank.testing"]`` (both at once are fine: the entry
point carries the module's name, so pytest registers it once). Fixtures:

* ``adrank_spark`` (session): the local Delta-enabled SparkSession of
  :func:`adrank.runtime.spark.build_spark` with the tiny config's settings (``local[2]``, 2 shuffle
  partitions, 1 GB driver). A session already active is reused and left running; one this
  fixture made is stopped at the end of the test session.
* ``adrank_config``: the tiny config (:func:`tiny_config`) with ``storage.root`` and
  ``inputs.root`` under the test's ``tmp_path``.
* ``adrank_sample_data``: ``adrank_config`` after the sample generator wrote its inputs
  (click log, LR features, snapshots, catalog, manifest) under ``inputs.root``.

Helpers: :func:`tiny_config` (``root`` + ``key=value`` overrides) and :data:`TINY_CONF`,
the tiny config file shipped in the package (the same bytes as the repository's
``conf/tiny.yaml``). Nothing heavy is imported until a fixture runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from adrank.core.config import Config, load_config

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

TINY_CONF = Path(__file__).resolve().parent / "conf" / "tiny.yaml"


def tiny_config(root: str | os.PathLike[str], *overrides: str) -> Config:
    """The tiny test config with ``storage.root=<root>/tables`` and ``inputs.root=<root>/inputs``.

    Args:
        root: A folder of the test (e.g. ``tmp_path``).
        overrides: ``key=value`` overrides applied after the roots (as ``--set``).
    """
    root = Path(root)
    return load_config(TINY_CONF, [f"storage.root={root / 'tables'}", f"inputs.root={root / 'inputs'}", *overrides])


@pytest.fixture(scope="session")
def adrank_spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    """The test session's SparkSession (local, Delta, tiny settings); an active one is reused."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    from adrank.runtime.spark import build_spark

    made_here = SparkSession.getActiveSession() is None
    session = build_spark(tiny_config(tmp_path_factory.mktemp("adrank_spark")).spark, "adrank-tests")
    yield session
    if made_here:
        session.stop()


@pytest.fixture
def adrank_config(tmp_path: Path) -> Config:
    """The tiny config whose tables and inputs live in this test's ``tmp_path``."""
    return tiny_config(tmp_path)


@pytest.fixture
def adrank_sample_data(adrank_spark: SparkSession, adrank_config: Config) -> Config:
    """``adrank_config`` with the sample inputs generated under its ``inputs.root``."""
    from adrank.runtime.runs import RunReport
    from adrank.sample.run import generate_data

    generate_data(adrank_spark, adrank_config, RunReport("generate_data"))
    return adrank_config


__all__ = ["TINY_CONF", "adrank_config", "adrank_sample_data", "adrank_spark", "tiny_config"]

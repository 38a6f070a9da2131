"""The adrank.testing pytest plugin, used the way a user's test suite uses it.

Fixtures in this process (a Delta table round trip, the sample generator), a user's test
file run in-process by ``pytester`` (it reuses this session's SparkSession and leaves it
running), and the plugin loaded both by a conftest and by the ``pytest11`` entry point in a
subprocess (registered once, no error).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import adrank
from adrank import testing
from conftest import REPO, TINY_CONF

LIB = Path(adrank.__file__).resolve().parents[1]


def test_the_packaged_tiny_config_is_the_repository_one():
    assert testing.TINY_CONF.is_file() and testing.TINY_CONF != TINY_CONF
    assert testing.TINY_CONF.read_bytes() == TINY_CONF.read_bytes()
    assert "conf/*.yaml" in (REPO / "setup.py").read_text()  # and the wheel carries it


def test_tiny_config_puts_both_roots_under_the_folder_and_applies_overrides(tmp_path):
    config = testing.tiny_config(tmp_path, "sample.seed=5", "train.ranks=1")
    assert (config.storage.root, config.inputs.root) == (str(tmp_path / "tables"), str(tmp_path / "inputs"))
    assert (config.sample.seed, config.train.ranks, config.sample.num_skus) == (5, 1, 120)


def test_adrank_spark_writes_and_reads_a_delta_table(adrank_spark, adrank_config, tmp_path):
    path = f"{adrank_config.storage.root}/scores"
    rows = [(1, "a", 0.5), (2, "b", 0.25)]
    adrank_spark.createDataFrame(rows, "sku_id long, name string, score double").write.format("delta").save(path)
    back = adrank_spark.read.format("delta").load(path).orderBy("sku_id")
    assert [tuple(r) for r in back.collect()] == rows
    assert (tmp_path / "tables" / "scores" / "_delta_log" / "00000000000000000000.json").is_file()
    assert adrank_spark.conf.get("spark.sql.session.timeZone") == "UTC"


def test_adrank_sample_data_writes_the_click_log_of_every_day(adrank_sample_data, tmp_path):
    inputs = tmp_path / "inputs"
    assert adrank_sample_data.inputs.root == str(inputs)
    days = sorted(p.name for p in (inputs / "click_log").glob("date=*"))
    assert len(days) == adrank_sample_data.sample.num_days == 3
    files = sorted((inputs / "click_log").glob("date=*/part-*"))
    lines = [line for f in files for line in f.read_text().splitlines()]
    assert len(lines) >= adrank_sample_data.sample.num_impressions  # and a few broken ones
    assert '"impression_id"' in lines[0]
    assert (inputs / "_manifest.json").is_file() and (inputs / "lr_features").is_dir()


USER_CONFTEST = 'pytest_plugins = ["adrank.testing"]\n'
USER_TESTS = textwrap.dedent('''
    def test_my_table(adrank_spark, adrank_config):
        path = adrank_config.storage.root + "/mine"
        adrank_spark.createDataFrame([(7, 0.5)], "sku_id long, score double").write.format("delta").save(path)
        assert [tuple(r) for r in adrank_spark.read.format("delta").load(path).collect()] == [(7, 0.5)]

    def test_my_roots(adrank_config, tmp_path):
        assert adrank_config.storage.root == str(tmp_path / "tables")
        assert adrank_config.train.ranks == 2
''')


def test_a_users_test_file_runs_on_the_plugin_with_pytester(pytester, spark):
    pytester.makeconftest(USER_CONFTEST)
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert spark.range(3).count() == 3  # the inner run reused this session and left it running


PROBE_TEST = textwrap.dedent('''
    import adrank.testing as plugin

    def test_registered_once(request, adrank_config):
        manager = request.config.pluginmanager
        assert [name for name, p in manager.list_name_plugin() if p is plugin] == ["adrank.testing"]
        dists = sorted(d.project_name for p, d in manager.list_plugin_distinfo() if p is plugin)
        print("ENTRY-POINT-DISTS", dists)
''')


def run_user_suite(folder: Path, *, entry_point: bool) -> subprocess.CompletedProcess[str]:
    """A user's suite whose conftest loads the plugin, with the ``pytest11`` entry point active or not."""
    (folder / "pytest.ini").write_text("[pytest]\n")
    (folder / "conftest.py").write_text(USER_CONFTEST)
    (folder / "test_probe.py").write_text(PROBE_TEST)
    path = [str(LIB)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    if entry_point:  # an installed distribution declaring the plugin, as setup.py does
        info = folder / "site" / "adrank_probe-0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: adrank-probe\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text("[pytest11]\nadrank.testing = adrank.testing\n")
        path.insert(0, str(folder / "site"))
    else:
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(path)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_the_plugin_from_a_conftest_and_the_entry_point_is_registered_once(tmp_path):
    for entry_point, dists in ((True, "['adrank-probe']"), (False, "[]")):
        folder = tmp_path / f"entry_point_{entry_point}"
        folder.mkdir()
        done = run_user_suite(folder, entry_point=entry_point)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"ENTRY-POINT-DISTS {dists}" in done.stdout and "1 passed" in done.stdout

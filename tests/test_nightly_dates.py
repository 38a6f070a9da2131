"""A scheduled night builds what arrived: the click-log dates ``training_examples`` lacks.

The rule as a pure function (every case), the table's dates from its Delta file listing,
and nights on the hand-made three days of ``test_build_dates``: nights that add one date at
a time end with the full build's tables.
"""

from __future__ import annotations

import datetime as dt
import shutil

from hypothesis import given
from hypothesis import strategies as st

from adrank.core import layout
from adrank.storage import delta
from adrank.tables.nightly import chosen_dates, nightly_dates, partition_date, table_dates
from test_build_dates import DAYS, fresh_config, run_build, snapshot_of, write_inputs

DATES = st.lists(st.dates(dt.date(2026, 1, 1), dt.date(2026, 1, 31)), max_size=8, unique=True)


@given(inputs=DATES, built=DATES)
def test_a_night_covers_every_new_date_and_nothing_before_the_first_new_one(inputs, built):
    chosen = nightly_dates(inputs, built).dates
    new = set(inputs) - set(built)
    if not inputs:
        assert chosen is None
    elif new:
        assert chosen == (min(new), max(inputs))
    else:  # nothing new: one day's cost, the newest built date again
        assert chosen == (max(built), max(built))


def test_the_first_night_builds_every_date():
    found = nightly_dates([DAYS[0], DAYS[1]], None)
    assert found.dates is None and "first night" in found.reason


def test_a_files_date_is_its_partition_folder():
    assert partition_date("file:///t/training_examples/date=2026-11-02/part-0.parquet") == dt.date(2026, 11, 2)
    assert partition_date("file:///t/x/date%3D2026-11-03/part-0.parquet") == dt.date(2026, 11, 3)
    assert partition_date("file:///t/sku_images/part-0.parquet") is None


def test_nights_adding_one_date_each_end_with_the_full_builds_tables(spark, tmp_path, capsys):
    everything = tmp_path / "all"
    write_inputs(spark, everything)
    full = fresh_config(tmp_path, everything)
    run_build(spark, full)
    arriving = tmp_path / "arriving"  # the inputs as they arrive: day 1 first, then one more a night
    shutil.copytree(everything, arriving)
    for source in (layout.CLICK_LOG, layout.LR_FEATURES):
        for day in DAYS[1:]:
            shutil.rmtree(arriving / source / f"date={day}")
    nightly = fresh_config(tmp_path, arriving)
    examples = layout.table_path(nightly, layout.TRAINING_EXAMPLES)
    assert table_dates(spark, examples) is None
    built = []
    for night, day in enumerate(DAYS):
        if night:
            for source in (layout.CLICK_LOG, layout.LR_FEATURES):
                shutil.copytree(everything / source / f"date={day}", arriving / source / f"date={day}")
        dates = chosen_dates(spark, nightly, None, new_dates=True)  # what build_tables(new_dates=True) builds
        assert dates == (None if night == 0 else (day, day))
        built.append(run_build(spark, nightly, dates).figures["dates"])
        assert table_dates(spark, examples) == DAYS[:night + 1]
    assert built == [[str(DAYS[0])] * 2, [str(DAYS[1])] * 2, [str(DAYS[2])] * 2]
    assert snapshot_of(spark, nightly) == snapshot_of(spark, full)
    again = chosen_dates(spark, nightly, None, new_dates=True)  # nothing new: the newest date again
    assert again == (DAYS[2], DAYS[2])
    assert "no new date" in capsys.readouterr().out
    before = delta.latest_version(spark, examples)
    run_build(spark, nightly, again)
    assert snapshot_of(spark, nightly) == snapshot_of(spark, full)
    assert delta.latest_version(spark, examples) == before + 1


def test_the_demo_runs_two_nights_only_on_fresh_storage_with_nothing_chosen():
    from adrank.core.config import load_config
    from adrank.orchestration.nights import first_night
    from adrank.orchestration.selection import Selection
    from conftest import TINY_CONF

    config = load_config(TINY_CONF, ["sample.num_days=5", "sample.start_date=2026-11-01"])
    night = first_night(config, Selection(), False)
    assert night == Selection(dates=(dt.date(2026, 11, 1), dt.date(2026, 11, 4)))  # all but the last day
    assert first_night(config, Selection(), True) is None  # tables exist: one run
    assert first_night(config, Selection(only=("recommend",)), False) is None
    assert first_night(config, Selection(dates=(dt.date(2026, 11, 2),) * 2), False) is None
    assert first_night(load_config(TINY_CONF, ["sample.num_days=2"]), Selection(), False) is None


def test_the_nights_table_shows_each_tasks_time_per_night_and_each_nights_figures():
    from adrank.orchestration.nights import night_summary, nights_table

    def record(seconds, auc, mode):
        return {"run_id": "r", "status": "succeeded", "timings_s": {"total": sum(seconds.values())},
                "tasks": {task: {"status": "ran", "seconds": s} for task, s in seconds.items()},
                "dates": ["2026-11-01", "2026-11-06"] if mode == "full" else ["2026-11-07", "2026-11-07"],
                "lr": {"metrics": {"auc": auc}},
                "joint": {"best_module": "dnn", "comparison": {"dnn": {"auc": auc + 0.1, "cold_auc": 0.6}}}}

    one = night_summary(record({"build_tables": 70.0, "train_lr": 50.0}, 0.61, "full"))
    two = night_summary(record({"build_tables": 12.5, "train_lr": 9.0}, 0.62, "incremental"))
    assert two["figures"]["best joint AUC"] == 0.72 and two["seconds"] == 21.5
    lines = nights_table({"1": one, "2": two}).splitlines()
    assert lines[0].split() == ["task", "night", "1", "night", "2"]
    assert lines[1].split() == ["build_tables", "70.0", "s", "ran", "12.5", "s", "ran"]
    assert any(line.split()[:2] == ["total", "120.0"] for line in lines)
    assert any(line.startswith("dates built") and "2026-11-01..2026-11-06" in line and line.endswith("2026-11-07")
               for line in lines)
    assert any(line.startswith("LR AUC") and line.split()[-2:] == ["0.6100", "0.6200"] for line in lines)

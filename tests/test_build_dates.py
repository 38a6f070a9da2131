"""build_tables over dates: any order of full and per-date builds gives the same tables;
a date without inputs, a stray file, a badly named or a future folder never touches a table.

The inputs are made by hand (three days, a few impressions each) with the cases that cross
dates: an impression id on two days, a broken first copy, LR records filed in another
day's folder.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import shutil
import uuid

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from adrank.core import layout
from adrank.core.config import load_config
from adrank.core.errors import InputError
from adrank.runtime.runs import RunReport
from adrank.storage import delta
from adrank.tables import inputs
from adrank.tables import run as build
from adrank.tables.plan import check_days_have_lines, plan_build
from conftest import TINY_CONF, load_job

DAYS = (dt.date(2026, 11, 1), dt.date(2026, 11, 2), dt.date(2026, 11, 3))
TODAY = dt.date(2026, 12, 1)
TABLES = (layout.SKU_IMAGES, layout.TRAINING_EXAMPLES, layout.QUARANTINE)


def click(impression_id: str, day: dt.date, **fields) -> str:
    record = {"impression_id": impression_id, "ts": f"{day}T10:00:00Z", "user_id": 1, "page": "feed",
              "ad_sku_id": 12, "position": 1, "clicked": 0, **fields}
    return json.dumps(record)


def lr(impression_id: str, *tokens: str) -> str:
    return json.dumps({"impression_id": impression_id, "features": list(tokens)})


CLICKS = {
    DAYS[0]: [click("a1", DAYS[0]), click("b1", DAYS[0], clicked=1), click("dup", DAYS[0], user_id=2),
              click("x1", DAYS[0], page="detail", context_sku_id=11)],
    DAYS[1]: [click("a2", DAYS[1]), click("dup", DAYS[1], user_id=3),  # a later copy: duplicate_id
              click("late_good", DAYS[1], ad_sku_id=999), click("early", DAYS[1], ad_sku_id=13)],
    DAYS[2]: [click("a3", DAYS[2]), click("late_good", DAYS[2]),  # the earlier copy is broken: kept
              click("dup", DAYS[2], user_id=4)],
}
LR_RECORDS = {
    DAYS[0]: [lr("a1", "hour=10"), lr("x1", "hour=11"), lr("early", "hour=12")],  # early: bad_value
    DAYS[1]: [lr("a2", "hour=10"), lr("a1", "hour=23"), lr("b1", "hour=9"), lr("dup", "hour=1")],
    DAYS[2]: [lr("a3", "hour=10"), lr("late_good", "hour=8")],
}


def png(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, format="PNG")
    return out.getvalue()


def write_inputs(spark, root) -> None:
    """The three days of hand-made inputs under ``root`` (the layout of docs/design.md "Input contracts")."""
    for source, by_day in (("click_log", CLICKS), ("lr_features", LR_RECORDS)):
        for day, rows in by_day.items():
            folder = root / source / f"date={day}"
            folder.mkdir(parents=True)
            (folder / "part-0.json").write_text("\n".join(rows) + "\n")
    for source, line in (("user_snapshots", '{"entity_id": 1, "valid_from": "2026-10-01T00:00:00Z", '
                          '"features": ["segment=1"]}'),
                         ("sku_snapshots", '{"entity_id": 12, "valid_from": "2026-10-01T00:00:00Z", '
                          '"features": ["brand=7"]}')):
        (root / source).mkdir(parents=True)
        (root / source / "part-0.json").write_text(line + "\n")
    updated = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    catalog = [(sku, f"sku {sku}", png((sku * 20, 40, 90)), updated, sku % 3) for sku in (11, 12, 13)]
    spark.createDataFrame(
        catalog, "sku_id long, title string, image binary, updated_at timestamp, category_id int"
    ).coalesce(1).write.parquet(str(root / "catalog"))


@pytest.fixture(scope="module")
def inputs_root(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("dated-inputs")
    write_inputs(spark, root)
    return root


def fresh_config(base, inputs_root):
    """A config whose tables live in a new folder under ``base``, reading ``inputs_root``."""
    tables_root = base / f"tables-{uuid.uuid4().hex[:8]}"
    return load_config(TINY_CONF, [f"storage.root={tables_root}", f"inputs.root={inputs_root}"])


def run_build(spark, config, dates=None, **options) -> RunReport:
    report = RunReport("build_tables")
    report.record(build.build_tables(spark, config, report, dates, today=TODAY, **options))
    return report


def snapshot_of(spark, config) -> dict[str, list]:
    """Every table's rows, sorted, without the columns that name the run."""
    rows = {}
    for table in TABLES:
        frame = delta.read_delta(spark, layout.table_path(config, table))
        frame = frame.drop("run_id", "quarantined_at")
        rows[table] = sorted(frame.collect(), key=repr)
    return rows


def versions_of(spark, config) -> dict[str, int]:
    return {t: delta.latest_version(spark, layout.table_path(config, t)) for t in TABLES}


@pytest.fixture(scope="module")
def full_build(spark, inputs_root, tmp_path_factory):
    """The reference: one full build of the three days."""
    config = fresh_config(tmp_path_factory.mktemp("full"), inputs_root)
    report = run_build(spark, config)
    return config, report, snapshot_of(spark, config)


def test_cross_date_duplicates_and_lr_records_resolve_by_the_rules(full_build):
    _, report, rows = full_build
    examples = {(r.impression_id, r.date): r for r in rows[layout.TRAINING_EXAMPLES]}
    assert sorted(examples) == sorted([
        ("a1", DAYS[0]), ("b1", DAYS[0]), ("dup", DAYS[0]), ("x1", DAYS[0]),
        ("a2", DAYS[1]), ("early", DAYS[1]), ("a3", DAYS[2]), ("late_good", DAYS[2]),
    ])
    quarantined = sorted((r.source, r.input_date, r.reason, json.loads(r.raw)["impression_id"])
                         for r in rows[layout.QUARANTINE])
    assert quarantined == sorted([
        ("click_log", DAYS[1], "duplicate_id", "dup"), ("click_log", DAYS[2], "duplicate_id", "dup"),
        ("click_log", DAYS[1], "unknown_sku", "late_good"),
        ("lr_features", DAYS[0], "bad_value", "early"),
        ("lr_features", DAYS[1], "date_mismatch", "a1"), ("lr_features", DAYS[1], "date_mismatch", "b1"),
        ("lr_features", DAYS[1], "date_mismatch", "dup"),
    ])
    # a1 keeps the tokens of its own day's record only; b1's only record was filed late.
    assert examples[("a1", DAYS[0])].num_sparse_ids == examples[("a2", DAYS[1])].num_sparse_ids
    assert examples[("b1", DAYS[0])].num_sparse_ids < examples[("a1", DAYS[0])].num_sparse_ids
    sources = report.figures["sources"]
    assert sources["click_log"] == {"input": 11, "good": 8, "quarantined": 3}
    assert sources["lr_features"] == {"input": 9, "good": 5, "quarantined": 4}


BUILD_STEPS = st.lists(
    st.one_of(st.sampled_from(DAYS).map(lambda d: (d, d)), st.just(None),
              st.sampled_from([(DAYS[0], DAYS[1]), (DAYS[1], DAYS[2])])),
    max_size=2,
)


@settings(max_examples=1, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(DAYS), before=BUILD_STEPS)
@example(order=list(reversed(DAYS)), before=[(DAYS[1], DAYS[2])])
def test_any_sequence_of_full_and_per_date_builds_ends_with_the_full_builds_tables(
    spark, inputs_root, full_build, tmp_path_factory, order, before
):
    """Some builds (full, a date, a range), then every date once in any order."""
    config = fresh_config(tmp_path_factory.getbasetemp(), inputs_root)
    for dates in [*before, *((d, d) for d in order)]:
        run_build(spark, config, dates)
    assert snapshot_of(spark, config) == full_build[2]


@pytest.fixture
def own_inputs(spark, inputs_root, tmp_path):
    """A copy of the inputs this test may break, and a built config over it."""
    root = tmp_path / "inputs"
    shutil.copytree(inputs_root, root)
    config = fresh_config(tmp_path, root)
    run_build(spark, config)
    return root, config


def test_a_date_without_inputs_is_refused_and_no_table_changes(spark, own_inputs):
    root, config = own_inputs
    before, rows = versions_of(spark, config), snapshot_of(spark, config)
    shutil.rmtree(root / "click_log" / f"date={DAYS[1]}")
    (root / "lr_features" / f"date={DAYS[1]}" / "part-0.json").write_text("")
    (root / "lr_features" / f"date={DAYS[2]}" / "part-0.json").write_text("")
    with pytest.raises(InputError, match=rf"no input lines for {DAYS[1]} \(click_log: {DAYS[1]}; "
                       rf"lr_features: {DAYS[1]}\): .*--allow-empty-dates"):
        run_build(spark, config, (DAYS[1], DAYS[1]))
    with pytest.raises(InputError, match=rf"for {DAYS[1]}, {DAYS[2]} \(click_log: {DAYS[1]}; "
                       rf"lr_features: {DAYS[1]}, {DAYS[2]}\)"):
        run_build(spark, config)  # the default build: every date of the click log
    assert versions_of(spark, config) == before
    assert snapshot_of(spark, config) == rows


def test_a_date_said_to_be_really_empty_is_replaced_by_nothing(spark, own_inputs):
    root, config = own_inputs
    for source in ("click_log", "lr_features"):
        shutil.rmtree(root / source / f"date={DAYS[1]}")
    report = run_build(spark, config, (DAYS[1], DAYS[1]), allow_empty_dates=True)
    examples = delta.read_delta(spark, layout.table_path(config, layout.TRAINING_EXAMPLES))
    assert sorted({r.date for r in examples.select("date").collect()}) == [DAYS[0], DAYS[2]]
    assert report.figures["sources"]["click_log"] == {"input": 0, "good": 0, "quarantined": 0}


def test_the_job_refuses_stray_badly_named_and_future_input_folders_in_one_line(
    spark, own_inputs, capsys
):
    root, config = own_inputs
    main = load_job("build_tables").main
    argv = ["--conf-file", "conf/tiny.yaml", "--set", f"storage.root={config.storage.root}",
            "--set", f"inputs.root={root}"]
    before = versions_of(spark, config)
    cases = {
        "click_log/part-9.json": lambda: (root / "click_log" / "part-9.json").write_text(click("s", DAYS[0])),
        "click_log/date=2026-11-4": lambda: (root / "click_log" / "date=2026-11-4").mkdir(),
        "lr_features/date=2999-01-01": lambda: (root / "lr_features" / "date=2999-01-01").mkdir(),
    }
    for named, make in cases.items():
        make()
        assert main(argv) == 1
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("build_tables: error: ") and named in error[0]
        shutil.rmtree(root / named) if (root / named).is_dir() else (root / named).unlink()
    assert versions_of(spark, config) == before


def test_the_plan_refuses_a_future_range_and_lists_the_click_log_history_it_does_not_read():
    listings = {
        "click_log": inputs.DatedFolders("click_log", DAYS, ()),
        "lr_features": inputs.DatedFolders("lr_features", DAYS, ()),
    }
    plan = plan_build(listings, (DAYS[2], DAYS[2]), TODAY)
    assert plan.history == DAYS[:2] and plan.days == (DAYS[2],)
    assert plan_build(listings, None, TODAY).dates == (DAYS[0], DAYS[2])
    with pytest.raises(InputError, match="2999-01-01: it is in the future"):
        plan_build(listings, (DAYS[0], dt.date(2999, 1, 1)), TODAY)
    check_days_have_lines(plan, {"click_log": {DAYS[2]: 3}, "lr_features": {DAYS[2]: 1}})
    with pytest.raises(InputError, match=f"lr_features: {DAYS[2]}"):
        check_days_have_lines(plan, {"click_log": {DAYS[2]: 3}, "lr_features": {}})


def kept_ids_mirror_training_examples(spark, config) -> bool:
    """``impression_ids`` holds exactly the ids and dates of ``training_examples``."""
    state = delta.read_delta(spark, layout.table_path(config, layout.IMPRESSION_IDS))
    examples = delta.read_delta(spark, layout.table_path(config, layout.TRAINING_EXAMPLES))
    return sorted(state.collect()) == sorted(examples.select("impression_id", "date").collect())


def remove_raw_days(root, days) -> None:
    for source in ("click_log", "lr_features"):
        for day in days:
            shutil.rmtree(root / source / f"date={day}")


def test_a_nightly_build_reads_its_day_and_the_kept_ids_not_the_raw_history(
    spark, inputs_root, full_build, tmp_path
):
    """Days 1-2 built, their raw folders gone: day 3 alone gives the full build's tables."""
    root = tmp_path / "inputs"
    shutil.copytree(inputs_root, root)
    config = fresh_config(tmp_path, root)
    run_build(spark, config, (DAYS[0], DAYS[0]))
    run_build(spark, config, (DAYS[1], DAYS[1]))
    remove_raw_days(root, DAYS[:2])  # "dup" is kept on day 1: only the state can say so now
    figures = run_build(spark, config, (DAYS[2], DAYS[2])).figures
    assert snapshot_of(spark, config) == full_build[2]
    assert kept_ids_mirror_training_examples(spark, config)
    assert figures["dates"] == figures["requested"] == [str(DAYS[2])] * 2
    assert figures["click_log_dates_read"] == 1 and figures["state_rebuilt"] is None
    assert figures["state_rows_read"] == 6  # the kept ids of days 1 and 2
    assert figures["sources"]["click_log"] == {"input": 3, "good": 2, "quarantined": 1}  # dup: duplicate_id


def test_an_earlier_date_built_after_a_later_one_makes_the_later_copy_the_duplicate(spark, own_inputs):
    """Day 2 built alone keeps "dup"; building day 1 then rebuilds day 2, whose copy becomes the duplicate."""
    root, reference = own_inputs
    config = fresh_config(root.parent, root)
    run_build(spark, config, (DAYS[1], DAYS[1]))
    examples = layout.table_path(config, layout.TRAINING_EXAMPLES)
    assert delta.read_delta(spark, examples).where("impression_id = 'dup'").first().date == DAYS[1]
    figures = run_build(spark, config, (DAYS[0], DAYS[0])).figures
    assert figures["requested"] == [str(DAYS[0])] * 2 and figures["dates"] == [str(DAYS[0]), str(DAYS[1])]
    dup = delta.read_delta(spark, examples).where("impression_id = 'dup'").collect()
    assert [(r.date, r.user_id) for r in dup] == [(DAYS[0], 2)]
    quarantine = delta.read_delta(spark, layout.table_path(config, layout.QUARANTINE))
    assert quarantine.where(f"reason = 'duplicate_id' AND input_date = '{DAYS[1]}'").count() == 1
    assert kept_ids_mirror_training_examples(spark, config)
    run_build(spark, config, (DAYS[2], DAYS[2]))
    assert snapshot_of(spark, config) == snapshot_of(spark, reference)


def test_a_date_to_rebuild_without_its_raw_lines_is_refused_and_named(spark, own_inputs):
    root, _ = own_inputs
    config = fresh_config(root.parent, root)
    run_build(spark, config, (DAYS[1], DAYS[1]))
    before = versions_of(spark, config)
    remove_raw_days(root, DAYS[1:2])
    with pytest.raises(InputError, match=rf"no input lines for {DAYS[1]} .*{DAYS[1]} widened the range"):
        run_build(spark, config, (DAYS[0], DAYS[0]))
    assert versions_of(spark, config) == before


def test_the_kept_ids_are_rebuilt_when_missing_or_behind_and_the_run_says_why(
    spark, inputs_root, full_build, tmp_path, monkeypatch
):
    """A store from before the state (no ``impression_ids``) and a run killed between its two commits."""
    config = fresh_config(tmp_path, inputs_root)
    run_build(spark, config, (DAYS[0], DAYS[0]))
    shutil.rmtree(layout.table_path(config, layout.IMPRESSION_IDS))
    figures = run_build(spark, config, (DAYS[1], DAYS[1])).figures
    assert figures["state_rebuilt"].endswith("impression_ids is missing")
    assert kept_ids_mirror_training_examples(spark, config)

    def killed(*args, **kwargs):
        raise RuntimeError("killed after the training_examples commit")

    with monkeypatch.context() as patched:
        patched.setattr(build, "write_kept_ids", killed)
        with pytest.raises(RuntimeError, match="killed"):
            run_build(spark, config, (DAYS[2], DAYS[2]))
    figures = run_build(spark, config, (DAYS[2], DAYS[2])).figures
    assert "mirrors training_examples v1, the latest is v2" in figures["state_rebuilt"]
    assert snapshot_of(spark, config) == full_build[2]
    assert kept_ids_mirror_training_examples(spark, config)
    again = run_build(spark, config, (DAYS[2], DAYS[2])).figures  # a rerun: the same tables, nothing rebuilt
    assert again["state_rebuilt"] is None and snapshot_of(spark, config) == full_build[2]


def test_a_widening_that_adds_a_never_built_day_widens_again(spark, inputs_root, tmp_path):
    """Day 4 keeps "a2", day 3 keeps "dup"; building day 1 widens to day 3, whose range adds day 2
    (never built) holding "a2": day 4 is rebuilt too, so its copy becomes the duplicate."""
    day4 = DAYS[2] + dt.timedelta(days=1)
    root = tmp_path / "inputs"
    shutil.copytree(inputs_root, root)
    for source, line in (("click_log", click("a2", day4, user_id=5)), ("lr_features", lr("a2", "hour=4"))):
        (root / source / f"date={day4}").mkdir()
        (root / source / f"date={day4}" / "part-0.json").write_text(line + "\n")
    reference = fresh_config(tmp_path, root)
    run_build(spark, reference)
    config = fresh_config(tmp_path, root)
    run_build(spark, config, (day4, day4))
    run_build(spark, config, (DAYS[2], DAYS[2]))
    figures = run_build(spark, config, (DAYS[0], DAYS[0])).figures
    assert figures["dates"] == [str(DAYS[0]), str(day4)]
    assert snapshot_of(spark, config) == snapshot_of(spark, reference)
    assert kept_ids_mirror_training_examples(spark, config)

"""JSON-lines parsing: one record per line, nothing lost inside a line, bytes kept as they are.

The lines go through Spark's text reader from real files (the build's route), so invalid
UTF-8 reaches the parser as the bytes the file holds. Text that is not Unicode reaches a
JSON line in two ways, both ``bad_encoding`` in every source: a byte that is not UTF-8
(latin-1 ``é``, 0xE9), or the ``\\udce9`` escape Python's ``json.dumps`` writes for that
byte once read with ``errors="surrogateescape"`` (Spark's parser would make it ``?``).
"""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from chispa import assert_df_equality
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from adrank.core.config import FeaturesConfig
from adrank.core.layout import CLICK_LOG, LR_FEATURES, SKU_SNAPSHOTS, USER_SNAPSHOTS
from adrank.tables.clicklog import parse_click_log
from adrank.tables.examples import build_examples_with_quarantine
from adrank.tables.quarantine import BAD_ENCODING, BAD_JSON, REASONS

GOOD = {"impression_id": "i1", "ts": "2026-11-01T10:00:00Z", "user_id": 1, "page": "feed",
        "ad_sku_id": 12, "position": 1, "clicked": 0}


def read_lines(spark, tmp_path, lines: list[bytes]):
    """``lines`` written to ``click_log/date=2026-11-01/`` and read back as the build does."""
    folder = tmp_path / f"click_log-{uuid.uuid4().hex[:8]}"
    day = folder / "date=2026-11-01"
    day.mkdir(parents=True)
    (day / "part-0.json").write_bytes(b"\n".join(lines) + b"\n")
    text = spark.read.option("basePath", str(folder)).text(str(folder))
    return text.withColumn("input_date", F.col("date").cast("date")).drop("date")


def good_line(**fields) -> bytes:
    return json.dumps({**GOOD, **fields}, ensure_ascii=False).encode()


def test_a_line_holding_more_than_one_record_or_trailing_text_is_bad_json(spark, tmp_path):
    one = good_line(impression_id="one")
    cases = {
        one: None,
        b"  " + one + b"\t ": None,
        one + b" " + good_line(impression_id="two"): BAD_JSON,
        one + good_line(impression_id="two"): BAD_JSON,
        one + b", " + good_line(impression_id="two"): BAD_JSON,
        one + b"xyz": BAD_JSON,
        one + b"] [" + good_line(impression_id="two"): BAD_JSON,
        one + b"} {" + good_line(impression_id="two")[1:-1]: BAD_JSON,
        one + b" // note": BAD_JSON,
    }
    parsed = parse_click_log(read_lines(spark, tmp_path, list(cases)))
    got = {row.raw.encode(): row.reason for row in parsed.collect()}
    assert got == cases


def test_invalid_utf8_is_quarantined_with_its_own_reason_and_its_exact_bytes(spark, tmp_path):
    broken = good_line(impression_id="caf\u00e9").replace("\u00e9".encode(), b"\xe9")  # latin-1 byte
    assert b"caf\xe9" in broken
    rows = parse_click_log(read_lines(spark, tmp_path, [good_line(), broken])).collect()
    reasons = {row.reason for row in rows}
    assert reasons == {None, BAD_ENCODING}
    bad = next(row for row in rows if row.reason == BAD_ENCODING)
    assert bad.raw.startswith("base64:")
    assert base64.b64decode(bad.raw[len("base64:"):]) == broken


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=6))
RECORDS = st.fixed_dictionaries(
    {}, optional={key: st.one_of(st.just(value), JSON_SCALARS) for key, value in GOOD.items()}
)


def _record_line(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()


def _mutated(draw, line: bytes) -> bytes:
    """``line`` with a random edit: truncated, a byte replaced, text appended or a record doubled."""
    kind = draw(st.sampled_from(["keep", "truncate", "byte", "append", "double"]))
    if kind == "truncate":
        return line[: draw(st.integers(0, len(line)))]
    if kind == "byte":
        at = draw(st.integers(0, max(len(line) - 1, 0)))
        return line[:at] + bytes([draw(st.integers(0, 255).filter(lambda b: b not in (10, 13)))]) + line[at + 1:]
    if kind == "append":
        return line + draw(st.binary(max_size=6).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")))
    if kind == "double":
        return line + draw(st.sampled_from([b"", b" ", b",", b"]", b"}"])) + line
    return line


@st.composite
def input_lines(draw) -> list[bytes]:
    records = draw(st.lists(RECORDS, min_size=1, max_size=25))
    return [_mutated(draw, _record_line(record)) for record in records]


def _is_one_json_object(line: bytes) -> bool:
    """The reference: Python's strict parser finds one object and nothing after it."""
    try:
        text = line.decode("utf-8")
        value, end = json.JSONDecoder().raw_decode(text.strip())
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(value, dict) and end == len(text.strip())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=input_lines())
def test_every_line_comes_out_once_good_or_with_a_reason(spark, tmp_path, lines):
    rows = parse_click_log(read_lines(spark, tmp_path, lines)).select("raw", "reason").collect()

    def original(raw: str) -> bytes:
        return base64.b64decode(raw[len("base64:"):]) if raw.startswith("base64:") else raw.encode()

    assert sorted(original(row.raw) for row in rows) == sorted(lines)  # none lost, none made up
    assert {row.reason for row in rows} <= {None, *REASONS}
    for row in rows:
        line = original(row.raw)
        if row.reason is None:  # a good line is one object that Python reads as such
            assert _is_one_json_object(line), line
            assert json.loads(line)["impression_id"] == json.loads(row.raw)["impression_id"]
        if not _is_valid_utf8(line):
            assert row.reason == BAD_ENCODING, line


def _is_valid_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- text that is not Unicode, in every text field of every JSON source ------------------

LATIN1_E = b"\xe9"  # latin-1 e-acute: not UTF-8
DAY_FOLDER = "date=2026-11-01"


def latin1_line(record: dict) -> bytes:
    """``record`` as a JSON line whose ``\u00e9`` characters are the latin-1 byte 0xE9."""
    return json.dumps(record, ensure_ascii=False).encode().replace("\u00e9".encode(), LATIN1_E)


def escaped_line(record: dict) -> bytes:
    """``record`` as Python writes it after reading 0xE9 with ``surrogateescape``: ``\\udce9``."""
    return json.dumps(record).replace("\\u00e9", "\\udce9").encode()


GOOD_SOURCES = {
    CLICK_LOG: [good_line(page="search", query="lamp")],
    LR_FEATURES: [json.dumps({"impression_id": "i1", "features": ["q=lamp"]}).encode()],
    USER_SNAPSHOTS: [json.dumps({"entity_id": 1, "valid_from": "2026-11-01T00:00:00Z", "features": ["city=x"]}).encode()],
    SKU_SNAPSHOTS: [json.dumps({"entity_id": 12, "valid_from": "2026-11-01T00:00:00Z", "features": ["brand=x"]}).encode()],
}
BROKEN_RECORDS = {  # a text field holding e-acute, written both ways
    CLICK_LOG: {**GOOD, "impression_id": "i2", "page": "search", "query": "caf\u00e9"},
    LR_FEATURES: {"impression_id": "i1", "features": ["q=caf\u00e9"]},
    USER_SNAPSHOTS: {"entity_id": 1, "valid_from": "2026-11-01T00:00:01Z", "features": ["city=s\u00e9te"]},
    SKU_SNAPSHOTS: {"entity_id": 12, "valid_from": "2026-11-01T00:00:01Z", "features": ["brand=caf\u00e9"]},
}


def source_lines(spark, folder, source: str, lines: list[bytes]):
    """``lines`` in a file of ``source`` (under its ``date=`` folder if dated), read as the build does."""
    dated = source in (CLICK_LOG, LR_FEATURES)
    where = folder / source / (DAY_FOLDER if dated else "")
    where.mkdir(parents=True)
    (where / "part-0.json").write_bytes(b"\n".join(lines) + b"\n")
    if not dated:
        return spark.read.text(str(where)).withColumn("input_date", F.lit(None).cast("date"))
    text = spark.read.option("basePath", str(folder / source)).text(str(folder / source))
    return text.withColumn("input_date", F.col("date").cast("date")).drop("date")


def build_with(spark, folder, extra: dict[str, list[bytes]]):
    """``build_examples_with_quarantine`` over the good lines of every source plus ``extra``."""
    frames = {source: source_lines(spark, folder, source, GOOD_SOURCES[source] + extra.get(source, []))
              for source in GOOD_SOURCES}
    skus = spark.createDataFrame([(12, 2, None)], "sku_id long, category_id int, updated_at timestamp")
    return build_examples_with_quarantine(*(frames[s] for s in GOOD_SOURCES), skus, FeaturesConfig())


@pytest.mark.parametrize("source", list(BROKEN_RECORDS))
def test_text_that_is_not_unicode_is_bad_encoding_in_every_source_and_every_line_is_counted(
        spark, tmp_path, source):
    record = BROKEN_RECORDS[source]
    latin1, escaped = latin1_line(record), escaped_line(record)
    assert LATIN1_E in latin1 and b"\\udce9" in escaped and escaped.isascii()
    examples, bad = build_with(spark, tmp_path / "broken", {source: [latin1, escaped]})

    expected = {("base64:" + base64.b64encode(latin1).decode(), BAD_ENCODING), (escaped.decode(), BAD_ENCODING)}
    assert {(row.raw, row.reason) for row in bad[source].collect()} == expected  # raw: the exact line
    assert all(bad[other].count() == 0 for other in bad if other != source)
    clean, _ = build_with(spark, tmp_path / "clean", {})
    assert_df_equality(examples, clean, ignore_row_order=True, ignore_nullable=True)  # nothing replaced, kept
    good = examples.count() if source == CLICK_LOG else len(GOOD_SOURCES[source])
    assert len(GOOD_SOURCES[source]) + 2 == good + bad[source].count()  # input = good + quarantined


@pytest.mark.parametrize("text, lone", [
    ("caf\\udce9", True), ("\\ud83d\\ude00", False), ("\\ud83d", True), ("\\ude00\\ud83d", True),
    ("\\ud83d\\ud83d\\ude00", True), ("\\\\udce9", False), ("\\\\\\udce9", True), ("\\u00e9", False),
    ("\\uD83D\\uDE00", False), ("\\uDCE9", True),
])
def test_a_lone_surrogate_escape_is_found_whatever_backslashes_precede_it(spark, tmp_path, text, lone):
    line = good_line().replace(b'"i1"', b'"' + text.encode() + b'"')
    (row,) = parse_click_log(read_lines(spark, tmp_path, [line])).collect()
    assert (row.reason == BAD_ENCODING) is lone, (text, row.reason)
    if not lone:
        assert row.reason is None and row.impression_id == json.loads(line)["impression_id"]


ANY_TEXT = st.text(st.one_of(st.characters(), st.sampled_from(["\ud800", "\udbff", "\udc00", "\udce9", "\udfff"])),
                   max_size=6)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(queries=st.lists(st.tuples(ANY_TEXT, st.booleans()), min_size=1, max_size=12),
       raw=st.lists(st.binary(min_size=1, max_size=4), max_size=4))
def test_any_text_or_bytes_in_a_field_is_kept_exactly_or_is_bad_encoding(spark, tmp_path, queries, raw):
    """A query of any code points (lone surrogates too), escaped or written as bytes, or of any
    bytes: the line is good only if its text is Unicode, then with the query exactly as written."""
    lines, expected = [], {}
    for n, (query, ascii_only) in enumerate(queries):
        record = {**GOOD, "impression_id": f"q{n}", "page": "search", "query": query}
        text = json.dumps(record, ensure_ascii=ascii_only)
        lines.append(text.encode("utf-8", "surrogatepass"))  # a lone surrogate unescaped: bytes that are not UTF-8
        expected[f"q{n}"] = query if _is_valid_utf8(query.encode("utf-8", "surrogatepass")) else None
    for n, field in enumerate(raw):
        field = field.replace(b"\n", b"").replace(b"\r", b"").replace(b'"', b"").replace(b"\\", b"")
        lines.append(good_line(impression_id=f"b{n}", page="search", query="@").replace(b'"@"', b'"' + field + b'"'))
    rows = parse_click_log(read_lines(spark, tmp_path, lines)).select("raw", "reason", "impression_id", "query").collect()
    assert len(rows) == len(lines)
    for row in rows:
        line = base64.b64decode(row.raw[len("base64:"):]) if row.raw.startswith("base64:") else row.raw.encode()
        assert line in lines
        if not _is_valid_utf8(line) or (row.impression_id in expected and expected[row.impression_id] is None):
            assert row.reason == BAD_ENCODING, line
        elif row.reason is None:
            assert row.query == json.loads(line)["query"], line

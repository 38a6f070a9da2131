"""JSON-lines parsing: one record per line, nothing lost inside a line, bytes kept as they are.

The lines go through Spark's text reader from real files (the build's route), so invalid
UTF-8 reaches the parser as the bytes the file holds.
"""

from __future__ import annotations

import base64
import json
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from adrank.build.clicklog import parse_click_log
from adrank.build.quarantine import BAD_ENCODING, BAD_JSON, REASONS

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

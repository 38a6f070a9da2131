"""The HTML report: the pure page builder, and the whole report opened in headless Chromium.

The browser test writes small real Delta tables (``sku_images`` with PIL-made PNG and JPEG
images, the three recommendation tables, ``training_examples``), calls ``write_report``,
then loads ``latest.html`` in an iframe of a harness page in ``chromium --headless
--dump-dom``; the harness writes, from inside the browser, every image's decoded size and
the texts of the tables into its own DOM, which the test parses.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from adrank.core import layout
from adrank.report.page import (
    Gallery,
    GalleryRow,
    Tile,
    comparison_rows,
    fmt_metric,
    lift_html,
    recommend_metric_rows,
    render_page,
    run_versions,
)
from adrank.report.run import previous_record, runs_folder, write_report
from adrank.storage.delta import write_delta
from conftest import TINY_CONF, load_job, tiny_config

HOLDOUT = "2024-01-03"
AS_OF = dt.datetime(2024, 1, 3, 0, 0)
COLOURS = [(200, 30, 30), (30, 160, 30), (30, 30, 200), (200, 180, 20)]
ESCAPED_QUERY = "<b>shoes & socks</b>"
RANKED = "array<struct<sku_id:long, score:float>>"
QUERIES = ["boots", "hats", "jackets", "scarves", "socks", ESCAPED_QUERY, "zips"]  # sorted: the 6 first are shown


def comparison_figures() -> dict:
    def row(auc, **extra):
        return {"auc": auc, "log_loss": 0.5 - auc / 10, "rows": 1000, "cold_auc": auc - 0.05, "cold_log_loss": 0.6,
                "cold_rows": 120, "detail_auc": auc + 0.01, "feed_auc": auc - 0.01, "search_auc": auc + 0.02,
                **extra}

    return {"lr": row(0.61234), "oracle": row(0.80001), "dot": row(0.65559), "product": row(0.66, search_auc=None),
            "dnn": None}


def run_figures() -> dict:
    losses = [[step, 1.0 / (step + 1)] for step in range(0, 50, 5)]
    training = {"losses": losses, "steps_run": 50, "seconds": 3.2}
    recommend_tables = {layout.SIMILAR_SKUS: {"version": 0, "rows": 20},
                        layout.USER_RECOMMENDATIONS: {"version": 0, "rows": 8},
                        layout.QUERY_RECOMMENDATIONS: {"version": 0, "rows": len(QUERIES)}}
    return {
        "run_id": "20240104T000000Z-abc123", "job": "pipeline", "status": "succeeded",
        "timings_s": {"train": 12.5, "recommend": 3.25},
        "pairwise": {"training": training, "metrics": {"pair_auc": 0.7}, "model_version": 3,
                     "training_examples_version": 0},
        "lr": {"training": training, "metrics": {"auc": 0.61}, "model_version": 4, "training_examples_version": 0},
        "embed_catalog": {"model_version": 3, "sku_embeddings_version": 2,
                          "serving_snapshot": {"snapshot_version": 5, "rows": 20, "dim": 8}},
        "joint": {"comparison": comparison_figures(), "best_module": "product", "sku_embeddings_version": 2,
                  "embedding_model_version": 3, "training_examples_version": 0, "holdout_dates": [HOLDOUT],
                  "modules": {kind: {"training": training, "metrics": {}, "model_version": 5 + i}
                              for i, kind in enumerate(("dot", "product"))}},
        "recommend": {
            "versions": {"sku_embeddings": 2, "serving_snapshot": 5, "embedding_model": 3, "training_examples": 0},
            "search": {"method": "ivf", "skus": 20, "k": 10,
                       "ivf": {"lists": 4, "nprobe": 2, "recall_at_10": 0.9731, "recall_sample": 20}},
            "tables": recommend_tables,
            "metrics": {"similar_precision_at_10": 0.41234, "similar_precision_at_10_popularity": 0.25,
                        "similar_skus_evaluated": 20,
                        "query_recall_at_10": 0.3333, "query_recall_at_10_popularity": 0.1,
                        "query_searches": 40, "user_hit_rate_at_10": 0.5, "user_hit_rate_at_10_popularity": 0.125,
                        "users_evaluated": 8, "users_without_history": 1, "holdout_dates": [HOLDOUT]},
        },
    }


# --- the pure page -------------------------------------------------------------------------------


def test_the_page_escapes_every_text_from_the_figures():
    figures = {"run_id": "<script>alert(1)</script>", "job": "a&b", "timings_s": {"<i>step</i>": 1.0}}
    gallery = Gallery('<img src=x onerror="1">', (GalleryRow('query "<b>"', results=(Tile(1, caption="<u>"),)),),
                      versions={"t<": 1})
    page = render_page(figures, {}, [gallery])
    assert "<script>" not in page and "<b>" not in page and "<u>" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "a&amp;b" in page
    assert "&lt;img src=x onerror=&quot;1&quot;&gt;" in page and "query &quot;&lt;b&gt;&quot;" in page


def test_missing_sections_say_not_available():
    comparison = {"lr": comparison_figures()["lr"], "dot": comparison_figures()["dot"]}
    page = render_page({"run_id": "r1", "job": "pipeline", "joint": {"comparison": comparison}})
    assert "oracle row: not available" in page
    assert "recommend: not available" in page and "embed_catalog: not available" in page
    assert "pairwise training curve: not available" in page
    assert "recommendation galleries: not available" in page
    bare = render_page({"run_id": "r2"})
    assert "comparison: not available" in bare and "<html" in bare


def test_a_metric_that_is_none_or_nan_is_not_available_and_a_missing_count_or_row_a_dash():
    rows = {r[0]: r for r in comparison_rows({"dnn": None, "dot": {"auc": float("nan"), "rows": None,
                                                                    "cold_auc": 0.71234}})}
    assert rows["dnn"] == ["dnn", *["-"] * 8]
    assert rows["dot"][1:4] == ["not available", "0.7123", "not available"] and rows["dot"][-2:] == ["-", "-"]
    metrics = {"similar_precision_at_10": None, "similar_precision_at_10_popularity": float("nan")}
    assert recommend_metric_rows(metrics)[0][1:] == ["not available"] * 4 + ["-"]
    page = render_page({"run_id": "r", "recommend": {"metrics": metrics, "versions": {"sku_embeddings": None}}})
    assert "None" not in page and ">nan<" not in page.lower() and "sku_embeddings -" in page


def headline_text(page: str) -> str:
    """The text of the page's headline, tags removed, one line per row."""
    found = re.search(r'<div id="headline">(.*?)</div>', page, re.S)
    assert found, "the page has no headline"
    rows = re.sub(r"</tr>", "\n", found.group(1))
    return html.unescape(re.sub(r"<th>(.*?)</th>", r"\1: ", re.sub(r"<(?!/?th>)[^>]+>", "", rows))).strip()


def previous_figures() -> dict:
    """The run before :func:`run_figures`: another LR and product model, no dot module yet."""
    figures = run_figures()
    figures["run_id"], figures["lr"]["model_version"] = "20240103T000000Z-aaaaaa", 3
    figures["joint"]["modules"] = {"product": {"model_version": 4}}
    return figures


def test_the_page_opens_with_the_headline_and_ends_with_the_timings():
    figures = {**run_figures(), "timings_s": {"train": 12.5, "total": 348.0},
               "tasks": {"build_tables": {"status": "skipped", "from_run": "r0"}, "train_joint": {"status": "ran"},
                         "recommend": {"status": "ran"}}}
    page = render_page(figures, previous=previous_figures())
    lines = headline_text(page).splitlines()
    assert lines == [
        "run: pipeline succeeded in 5 min 48 s; tasks: 1 skipped, 2 ran",
        "joint model: best module product: AUC 0.660 vs LR 0.612 (+0.048), oracle 0.800: 25% of the possible lift",
        "cold start: best module product: cold-start AUC 0.610 vs LR 0.562 (+0.048), oracle 0.750: "
        "25% of the possible lift",
        "recommendations: similar-SKU precision@10 0.412 vs popularity 0.250 (+0.162); query recall@10 0.333 vs "
        "popularity 0.100 (+0.233); user hit rate@10 0.500 vs popularity 0.125 (+0.375)",
        "since the previous run: run 20240103T000000Z-aaaaaa (pipeline, succeeded): model lr v3 \u2192 v4; "
        "model joint product v4 \u2192 v6; model joint dot v5 (new); 7 other versions the same"]
    order = [page.index(f'id="{name}"') for name in ("headline", "joint", "training", "recommend", "galleries",
                                                      "timings")]
    assert order == sorted(order)  # the headline first, the timings last


def test_the_headline_of_a_partial_run_says_what_is_not_available():
    figures = {"run_id": "r9", "job": "pipeline", "status": "failed", "error": "train_joint: <boom>",
               "joint": {"comparison": {"lr": {"auc": 0.6}, "dnn": {"auc": 0.7, "cold_auc": None}}, "best_module": "dnn"},
               "recommend": {"metrics": {"similar_precision_at_10": None, "query_recall_at_10": 0.25,
                                         "query_recall_at_10_popularity": None}},
               "tasks": {"recommend": {"status": "skipped", "from_run": "r8"}}}
    lines = headline_text(render_page(figures)).splitlines()
    assert lines[:2] == ["run: pipeline failed; tasks: 1 skipped", "error: train_joint: <boom>"]
    assert lines[2] == "joint model: best module dnn: AUC 0.700 vs LR 0.600 (+0.100), oracle not available"
    assert lines[3] == "cold start: best module dnn: cold-start AUC not available"
    assert lines[4] == ("recommendations: similar-SKU precision@10 not available; query recall@10 0.250 vs popularity "
                        "not available; user hit rate@10 not available (from run r8: current, not run again)")
    assert lines[5] == "since the previous run: no earlier run record: nothing to compare"
    worse = {"lr": {"cold_auc": 0.7}, "oracle": {"cold_auc": 0.9}, "dnn": {"cold_auc": 0.6}}
    assert lift_html(worse, "dnn", "cold-start AUC", "cold_auc") == (
        "best module dnn: cold-start AUC 0.600 vs LR 0.700 (-0.100), oracle 0.900")  # no share of a negative lift
    bare = headline_text(render_page({"run_id": "r"})).splitlines()
    assert bare == ["run: run status not available", "joint model: best module not available",
                    "recommendations: not available", "since the previous run: no earlier run record: nothing to compare"]
    assert "timings: not available" in render_page({"run_id": "r"})


def test_run_versions_names_every_table_and_model_version_once():
    versions = run_versions(run_figures())
    assert versions == {"training_examples": 0, "model pairwise": 3, "sku_embeddings": 2, "serving snapshot": 5,
                        "model lr": 4, "model joint dot": 5, "model joint product": 6, "similar_skus": 0,
                        "user_recommendations": 0, "query_recommendations": 0}
    assert run_versions({"recommend": {"versions": {"sku_embeddings": 7}}}) == {"sku_embeddings": 7}


@pytest.mark.parametrize("uri", [False, True])
def test_the_previous_record_is_the_newest_older_readable_run_of_the_same_graph(spark, tmp_path, uri):
    runs = tmp_path / "tables" / layout.RUNS_FOLDER
    (runs / "tasks").mkdir(parents=True)
    config = tiny_config(tmp_path, *([f"storage.root={(tmp_path / 'tables').as_uri()}"] if uri else []))

    def record(job: str, run_id: str, text: str | None = None) -> None:
        (runs / f"{job}-{run_id}.json").write_text(text or json.dumps({"job": job, "run_id": run_id}))

    record("pipeline", "20240101T000000Z-aaaaaa")
    record("demo", "20240102T000000Z-bbbbbb")  # the same graph: it counts
    record("generate_data", "20240103T000000Z-cccccc")  # another job
    record("pipeline", "20240103T120000Z-dddddd", "{not json")  # unreadable: passed over
    record("pipeline", "20240105T000000Z-eeeeee")  # after the run
    (runs / "pipeline-20240103T130000Z-ffffff.log").write_text("a log, not a record")
    (runs / "tasks" / "recommend.json").write_text("{}")

    def previous(job: str, run_id: str) -> str | None:
        found = previous_record(spark, runs_folder(config), {"job": job, "run_id": run_id})
        return None if found is None else found["run_id"]

    assert previous("pipeline", "20240104T000000Z-abc123") == "20240102T000000Z-bbbbbb"
    assert previous("generate_data", "20240104T000000Z-abc123") == "20240103T000000Z-cccccc"
    assert previous("pipeline", "20240101T000000Z-000000") is None
    empty = runs_folder(tiny_config(tmp_path / "empty"))
    assert previous_record(spark, empty, {"job": "pipeline", "run_id": "r"}) is None


def test_an_unavailable_gallery_says_why():
    page = render_page({"run_id": "r"}, galleries=[Gallery("Similar SKUs", unavailable="no version of similar_skus")])
    assert "no version of similar_skus: not available" in page


# --- the whole report in a browser -----------------------------------------------------------------


def sku_category(sku: int) -> int:
    return (sku - 1) // 5


def encoded_image(sku: int) -> tuple[bytes, str]:
    """A 16x16 solid image in its category's colour: PNG, and JPEG for SKU 20."""
    buffer = io.BytesIO()
    image_format = "JPEG" if sku == 20 else "PNG"
    Image.new("RGB", (16, 16), COLOURS[sku_category(sku)]).save(buffer, format=image_format)
    return buffer.getvalue(), image_format


def write_tables(spark, config) -> None:
    """The five tables the galleries read (``similar_skus`` at two versions)."""
    for writer in (write_sku_images, write_similar_skus, write_user_recommendations, write_query_recommendations,
                   write_training_examples):
        writer(spark, config)


def write_sku_images(spark, config) -> None:
    from pyspark.sql import Row

    images = []
    for sku in range(1, 21):
        data, image_format = encoded_image(sku)
        images.append(Row(sku_id=sku, title=f"SKU {sku}", image=bytearray(data), image_format=image_format,
                          height=16, width=16, channels=3, image_hash=f"h{sku}",
                          updated_at=dt.datetime(2024, 1, 1), category_id=sku_category(sku)))
    sku_schema = ("sku_id long, title string, image binary, image_format string, height int, width int, "
                  "channels int, image_hash string, updated_at timestamp, category_id int")
    write_delta(spark.createDataFrame(images, sku_schema), layout.table_path(config, layout.SKU_IMAGES))


def write_similar_skus(spark, config) -> None:
    similar = [(s, [(n, 1.0 - d / 20) for d, n in enumerate(neighbours(s), start=1)]) for s in range(1, 21)]
    path = layout.table_path(config, layout.SIMILAR_SKUS)
    write_delta(spark.createDataFrame(similar, f"sku_id long, neighbours {RANKED}"), path)  # version 0: pinned
    write_delta(spark.createDataFrame([(s, []) for s in range(1, 21)], f"sku_id long, neighbours {RANKED}"),
                path, mode="overwrite")  # version 1: not the run's, must not be shown


def write_user_recommendations(spark, config) -> None:
    users = [(u, AS_OF, u if u < 8 else 0, [((u * 2 + d) % 20 + 1, 0.9 - d / 20) for d in range(10)])
             for u in range(1, 9)]
    schema = f"user_id long, as_of timestamp, behaviour_clicks int, recommendations {RANKED}"
    write_delta(spark.createDataFrame(users, schema), layout.table_path(config, layout.USER_RECOMMENDATIONS))


def write_query_recommendations(spark, config) -> None:
    queries = [(q, [((i * 3 + d) % 20 + 1, 0.8 - d / 20) for d in range(10)]) for i, q in enumerate(QUERIES)]
    write_delta(spark.createDataFrame(queries, f"query string, recommendations {RANKED}"),
                layout.table_path(config, layout.QUERY_RECOMMENDATIONS))


def write_training_examples(spark, config) -> None:
    schema = ("impression_id string, ts timestamp, date date, user_id long, page string, context_sku_id long, "
              "query string, ad_sku_id long, ad_category_id int, label int, is_cold_start_ad boolean")
    write_delta(spark.createDataFrame(training_examples(), schema), layout.table_path(config, layout.TRAINING_EXAMPLES),
                partition_by=("date",))  # as build_tables writes it


def neighbours(sku: int) -> list[int]:
    """The 10 next SKUs (cyclic); SKU 1's last one (99) has no image."""
    found = [(sku + d - 1) % 20 + 1 for d in range(1, 11)]
    return found[:-1] + [99] if sku == 1 else found


def training_examples() -> list[tuple]:
    """User u (1..7) clicked SKUs 1..u before the held-out day; SKUs 15..20 are shown only on it (cold
    start); user 1 also clicks SKU 16 after its ``as_of`` (not a recent click of the report)."""
    rows = []
    for user in range(1, 8):
        for j in range(user):
            ts = dt.datetime(2024, 1, 1, 1 + j)
            rows.append((f"c{user}-{j}", ts, ts.date(), user, "feed", None, None, j + 1, sku_category(j + 1), 1, False))
    for sku in range(1, 21):
        day = dt.datetime(2024, 1, 3, 6) if sku >= 15 else dt.datetime(2024, 1, 2, 6)
        rows.append((f"s{sku}", day, day.date(), 8, "detail", 1, None, sku, sku_category(sku), 0, sku >= 15))
    late = dt.datetime(2024, 1, 3, 12)
    rows.append(("late", late, late.date(), 1, "feed", None, None, 16, sku_category(16), 1, True))
    return rows


# Images the report must show: 4 plots; 8 sampled SKUs (cold 15, 16, 17 and 1..5), each with its 10
# neighbours, less SKU 99 (no image); 6 queries x 10; users 1..6: 1+...+6 recent clicks and 10 each.
EXPECTED_IMAGES = 4 + (8 * 11 - 1) + 6 * 10 + (21 + 6 * 10)

HARNESS = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><pre id="result">pending</pre>
<iframe id="report" src="%s" width="1200" height="800"></iframe>
<script>
document.getElementById('report').addEventListener('load', function () {
  var doc = this.contentDocument, out = {images: [], tables: {}, headings: [], bold: 0, scripts: 0};
  Array.prototype.forEach.call(doc.images, function (img) {
    out.images.push({w: img.naturalWidth, h: img.naturalHeight, complete: img.complete,
                     data: img.getAttribute('src').indexOf('data:') === 0, alt: img.alt});
  });
  Array.prototype.forEach.call(doc.querySelectorAll('table[id]'), function (table) {
    out.tables[table.id] = Array.prototype.map.call(table.rows, function (row) {
      return Array.prototype.map.call(row.cells, function (cell) { return cell.textContent; });
    });
  });
  out.headings = Array.prototype.map.call(doc.querySelectorAll('h3'), function (h) { return h.textContent; });
  out.bold = doc.querySelectorAll('b').length;
  out.scripts = doc.querySelectorAll('script, link').length;
  out.text = doc.body.innerText;
  document.getElementById('result').textContent = JSON.stringify(out);
});
</script></body></html>
"""


def browser_view(report: Path, work: Path) -> dict:
    """What Chromium shows of ``report``: image sizes and table texts, read inside the browser."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed: run scripts/install_browser.sh as root")
    harness = work / "harness.html"
    harness.write_text(HARNESS % html.escape(report.resolve().as_uri()), encoding="utf-8")
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
               "--no-first-run", "--disable-extensions", f"--user-data-dir={work / 'chromium-profile'}",
               "--virtual-time-budget=10000", "--dump-dom", harness.as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    found = re.search(r'<pre id="result">(.*?)</pre>', done.stdout, re.S)
    assert found and found.group(1) != "pending", f"the harness did not report (rc {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


def test_the_report_renders_in_a_browser_with_every_image_decoded(spark, config, tmp_path):
    write_tables(spark, config)
    figures = run_figures()

    path = write_report(spark, config, figures)

    assert path == layout.reports_path(config, figures["run_id"])
    latest = Path(layout.reports_path(config, "latest"))
    assert latest.read_text(encoding="utf-8") == Path(path).read_text(encoding="utf-8")
    view = browser_view(latest, tmp_path)
    broken = [i for i in view["images"] if not (i["w"] > 0 and i["h"] > 0 and i["complete"] and i["data"])]
    assert broken == [] and len(view["images"]) == EXPECTED_IMAGES
    comparison = {row[0]: row for row in view["tables"]["comparison"][1:]}
    expected = comparison_figures()
    for name in ("lr", "oracle", "dot", "product"):
        assert comparison[name][1:4] == [fmt_metric(expected[name][k]) for k in ("auc", "cold_auc", "log_loss")]
    assert comparison["dot"][1] == "0.6556" and comparison["product"][6] == "not available"
    assert comparison["dnn"][1:] == ["-"] * 8
    metrics = {row[0].split(":")[0]: row[1:] for row in view["tables"]["recommend-metrics"][1:]}
    assert metrics["similar SKUs"] == ["0.4123", "0.4123", "0.2500", "0.1623", "20"]
    assert metrics["user behaviour"] == ["0.5000", "not available", "0.1250", "0.3750", "8"]
    assert ["similar_skus", "0", "20"] in view["tables"]["recommend-tables"]
    headings = view["headings"]
    assert [h for h in headings if h.startswith("SKU")] == [
        "SKU 1", "SKU 2", "SKU 3", "SKU 4", "SKU 5", "SKU 15 (cold start)", "SKU 16 (cold start)",
        "SKU 17 (cold start)"]
    assert f"query \u201c{ESCAPED_QUERY}\u201d" in headings and view["bold"] == 0 and view["scripts"] == 0
    assert "similar_skus 0; training_examples 0; sku_images 0" in view["text"]


def test_the_report_job_renders_a_run_report_file(spark, config, tmp_path, capsys):
    run = tmp_path / "pipeline-r7.json"
    run.write_text(json.dumps({"run_id": "r7", "job": "pipeline", "status": "failed", "error": "boom <x>",
                               "timings_s": {"total": 1.0}}), encoding="utf-8")

    assert load_job("report").main(["--conf-file", str(TINY_CONF), "--set", f"storage.root={config.storage.root}",
                                    "--run", str(run), "--json"]) == 0

    page = Path(layout.reports_path(config, "r7")).read_text(encoding="utf-8")
    assert "boom &lt;x&gt;" in page and "recommend: not available" in page
    assert Path(layout.reports_path(config, "latest")).read_text(encoding="utf-8") == page
    assert '"report_of": "r7"' in capsys.readouterr().out


# --- the first screen ------------------------------------------------------------------------------

SCREEN = (1400, 900)
FIRST_SCREEN = """<!DOCTYPE html><html><head><meta charset="utf-8">
<style>body{margin:0}iframe{border:0;display:block}</style></head><body>
<iframe id="report" src="%s" width="1400" height="900"></iframe><pre id="result">pending</pre>
<script>
document.getElementById('report').addEventListener('load', function () {
  var win = this.contentWindow, doc = this.contentDocument, headline = doc.getElementById('headline');
  var box = function (el) { var r = el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
  document.getElementById('result').textContent = JSON.stringify({
    viewport: [win.innerWidth, win.innerHeight], scroll: win.scrollY,
    headline: headline ? box(headline) : null, text: headline ? headline.innerText : null,
    timings: box(doc.getElementById('timings'))});
});
</script></body></html>
"""


def chromium_command(work: Path, *args: str) -> list[str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed: run scripts/install_browser.sh as root")
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
            "--no-first-run", "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={work / 'chromium-profile'}",
            f"--window-size={SCREEN[0]},{SCREEN[1]}", "--virtual-time-budget=10000", *args]


def screenshot(page: Path, work: Path) -> Image.Image:
    """``page`` as Chromium shows it in a 1400x900 window (PNG)."""
    png = work / f"{page.stem}.png"
    done = subprocess.run(chromium_command(work, f"--screenshot={png}", page.resolve().as_uri()),
                          capture_output=True, text=True, timeout=90, check=False)
    assert png.is_file(), f"no screenshot (rc {done.returncode}): {done.stderr[-2000:]}"
    return Image.open(png).convert("RGB")


def test_the_first_screen_at_1400x900_shows_the_headline(spark, config, tmp_path):
    from PIL import ImageChops

    write_tables(spark, config)
    fixture = json.loads((Path(__file__).parent / "fixtures" / "pipeline_report.json").read_text())
    figures = {**run_figures(), "timings_s": {**{f"task_{n}": 1.0 for n in range(9)}, **fixture["timings_s"]}}
    assert len(figures["timings_s"]) >= 40  # a real run's timings: more than a screen
    runs = Path(config.storage.root) / layout.RUNS_FOLDER
    runs.mkdir(parents=True)
    (runs / "pipeline-20240103T000000Z-aaaaaa.json").write_text(json.dumps(previous_figures()))
    report = Path(write_report(spark, config, figures))

    harness = tmp_path / "first-screen.html"
    harness.write_text(FIRST_SCREEN % html.escape(report.resolve().as_uri()), encoding="utf-8")
    done = subprocess.run(chromium_command(tmp_path, "--dump-dom", harness.as_uri()), capture_output=True, text=True,
                          timeout=90, check=False)
    found = re.search(r'<pre id="result">(.*?)</pre>', done.stdout, re.S)
    assert found and found.group(1) != "pending", f"the harness did not report (rc {done.returncode}): {done.stderr[-2000:]}"
    view = json.loads(html.unescape(found.group(1)))
    assert view["viewport"] == list(SCREEN) and view["scroll"] == 0
    left, top, right, bottom = view["headline"]
    assert 0 <= left < right <= SCREEN[0] and 0 <= top < bottom <= SCREEN[1]  # all of it on the first screen
    assert "best module product: AUC 0.660 vs LR 0.612" in view["text"]
    assert "model lr v3 \u2192 v4" in view["text"] and "similar-SKU precision@10 0.412" in view["text"]
    assert view["timings"][1] > SCREEN[1]  # the timings come last, below the first screen

    shown = screenshot(report, tmp_path)  # what a person sees, against the same page without the headline
    hidden = tmp_path / "hidden.html"
    hidden.write_text(report.read_text(encoding="utf-8").replace(
        "</head>", "<style>#headline{visibility:hidden}</style></head>", 1), encoding="utf-8")
    assert shown.size == SCREEN
    changed = ImageChops.difference(shown, screenshot(hidden, tmp_path)).getbbox()
    assert changed is not None, "the headline is not on the first screen"
    assert changed[3] - changed[1] >= 60  # several lines of text, not a stray pixel


def test_the_galleries_read_the_held_out_dates_and_the_lookback_only(spark, config):
    """A date partition before the lookback window is never read: its files can be gone."""
    from adrank.report.gallery import gallery_tables, recent_examples
    from adrank.storage import delta

    write_training_examples(spark, config)
    path = layout.table_path(config, layout.TRAINING_EXAMPLES)
    old = [("old", dt.datetime(2023, 6, 1, 6), dt.date(2023, 6, 1), 1, "feed", None, None, 3, sku_category(3), 1, False)]
    schema = ("impression_id string, ts timestamp, date date, user_id long, page string, context_sku_id long, "
              "query string, ad_sku_id long, ad_category_id int, label int, is_cold_start_ad boolean")
    write_delta(spark.createDataFrame(old, schema), path, mode="append")
    version = delta.latest_version(spark, path)
    reads = gallery_tables(config)
    assert reads.lookback_days == config.features.behaviour_lookback_days
    recommend = {"metrics": {"holdout_dates": ["2024-01-03"]}}
    whole = {r.impression_id for r in recent_examples(spark, reads, version, {}).collect()}  # no held-out dates: all
    assert "old" in whole
    shutil.rmtree(Path(path) / "date=2023-06-01")  # the old day's files are gone: a whole read would fail
    found = {r.impression_id for r in recent_examples(spark, reads, version, recommend).collect()}
    assert found == whole - {"old"}

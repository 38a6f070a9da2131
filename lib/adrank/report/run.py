"""Write a run's HTML report: ``<storage.root>/_reports/<run id>.html`` and ``latest.html``.

The report is one self-contained HTML file (plots and SKU images inline as ``data:`` URIs;
no network, no external CSS or JavaScript) built from the run's figures
(``RunReport.as_dict()``): the joint model's comparison, the training curves, the catalog
embeddings, the recommendation metrics against popularity, and galleries sampled from the
recommendation tables at the versions the run wrote. Any section may be missing: the
report still renders and says "not available".

The headline compares the run's versions with the previous run's: :func:`previous_record`
reads the newest run record under ``<storage.root>/_runs`` older than the run (by run id,
which sorts by time) of the same job (``pipeline`` and ``demo`` count as one: they run the
same graph). The ``report`` job (:func:`report_run`) renders a recorded run and returns
:class:`ReportWritten`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pyspark.sql import SparkSession

from adrank.core import layout
from adrank.core.config import Config
from adrank.report.gallery import galleries, gallery_tables
from adrank.report.page import render_page
from adrank.report.plots import all_plots
from adrank.runtime.console import GRAPH_JOBS
from adrank.storage.delta import hadoop_path, read_text_file, write_text_file

LATEST = "latest"
RECORD_NAME = re.compile(r"([a-z_]+)-(.+)\.json")  # a run record: <job>-<run id>.json


@dataclass(frozen=True)
class ReportWritten:
    """What a ``report`` run wrote: the HTML report of run ``report_of``, at ``path``."""

    report_of: str | None
    path: str

    def as_json(self) -> dict[str, Any]:
        """The run record's ``report_of`` and ``path``."""
        return {"report_of": self.report_of, "path": self.path}


def report_run(spark: SparkSession, config: Config, run_record: str) -> ReportWritten:
    """The ``report`` job: the HTML report of the run whose JSON record is at ``run_record``."""
    figures = read_figures(spark, run_record)
    return ReportWritten(figures.get("run_id"), write_report(spark, config, figures))


def write_report(spark: SparkSession, config: Config, figures: Mapping[str, Any]) -> str:
    """Write the run's HTML report and make it ``latest.html``.

    Args:
        spark: The session (reads the recommendation tables for the galleries; writes URIs).
        config: The run's config (where the tables and reports live).
        figures: The run's figures, ``RunReport.as_dict()`` (``run_id`` is required).

    Returns:
        The path of the run's report, ``<storage.root>/_reports/<run id>.html``.

    Raises:
        ValueError: ``figures`` has no usable ``run_id``.
    """
    run_id = _run_id(figures)
    page = render_page(figures, all_plots(figures), galleries(spark, gallery_tables(config), figures),
                       previous_record(spark, runs_folder(config), figures))
    path = layout.reports_path(config, run_id)
    for target in (path, layout.reports_path(config, LATEST)):
        _replace_file(spark, target, page)
    return path


def read_figures(spark: SparkSession, path: str) -> dict[str, Any]:
    """A run's figures from its JSON report (``<storage.root>/_runs/<job>-<run id>.json``; a path or a URI)."""
    text = "\n".join(row.value for row in spark.read.text(path).collect())
    figures = json.loads(text)
    if not isinstance(figures, dict):
        raise ValueError(f"{path} does not hold a JSON object of figures")
    return figures


def runs_folder(config: Config) -> str:
    """The folder of the run records: ``<storage.root>/_runs``."""
    return layout.join_path(config.storage.root, layout.RUNS_FOLDER)


def previous_record(spark: SparkSession, folder: str, figures: Mapping[str, Any]) -> dict[str, Any] | None:
    """The newest readable run record in ``folder`` (:func:`runs_folder`) of the same job older than
    ``figures``' run; None if there is none.

    A record that cannot be read or parsed is passed over (the one before it is taken).
    """
    job, run_id = figures.get("job"), figures.get("run_id")
    if not isinstance(job, str) or not isinstance(run_id, str):
        return None
    jobs = set(GRAPH_JOBS) if job in GRAPH_JOBS else {job}
    older = sorted(((found.group(2), name) for name in _file_names(spark, folder)
                    if (found := RECORD_NAME.fullmatch(name)) and found.group(1) in jobs and found.group(2) < run_id),
                   reverse=True)
    for _, name in older:
        try:
            record = json.loads(read_text_file(spark, layout.join_path(folder, name)) or "")
        except ValueError:
            continue
        if isinstance(record, dict):
            return record
    return None


def _file_names(spark: SparkSession, folder: str) -> list[str]:
    """The names of the files in ``folder`` (a local path or a URI); none when it does not exist."""
    if not urlparse(folder).scheme:
        return sorted(os.listdir(folder)) if os.path.isdir(folder) else []
    path, fs = hadoop_path(spark, folder)
    if not fs.exists(path):
        return []
    return sorted(status.getPath().getName() for status in fs.listStatus(path) if status.isFile())


def _run_id(figures: Mapping[str, Any]) -> str:
    run_id = figures.get("run_id")
    if not isinstance(run_id, str) or not run_id or run_id == LATEST or any(c in run_id for c in "/\\"):
        raise ValueError(f"the figures need a run_id usable as a file name, not {run_id!r}")
    return run_id


def _replace_file(spark: SparkSession, target: str, text: str) -> None:
    """Write ``text`` to ``target``, replacing it whole: a local path through a temporary file in the
    same folder and :func:`os.replace`; a URI through the session's Hadoop FileSystem."""
    if urlparse(target).scheme:
        write_text_file(spark, target, text)
        return
    folder = Path(target).parent
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=folder, prefix=".report-", suffix=".tmp",
                                     delete=False) as handle:
        handle.write(text)
    try:
        os.chmod(handle.name, 0o644)  # a temporary file is private; the report is not
        os.replace(handle.name, target)
    except BaseException:
        os.unlink(handle.name)
        raise

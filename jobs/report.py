"""spark-submit job: write the HTML report of a finished run from its JSON run report."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pyspark.sql import SparkSession

from adrank.core.config import Config
from adrank.report.run import read_figures, write_report
from adrank.runtime.cli import job_parser, parse_job_args
from adrank.runtime.runs import RunReport, run_job


def main(argv: Sequence[str] | None = None) -> int:
    """Render ``--run`` (a ``_runs/<job>-<run id>.json``) as ``_reports/<run id>.html`` and ``latest.html``."""
    parser = job_parser("report", "Write a run's self-contained HTML report (and make it latest.html).")
    parser.add_argument("--run", required=True, metavar="JSON",
                        help="the run's JSON report, e.g. <storage.root>/_runs/pipeline-<run id>.json")
    args, config = parse_job_args(parser, argv)

    def body(spark: SparkSession, cfg: Config, report: RunReport) -> None:
        figures = read_figures(spark, args.run)
        report.figures.update(report_of=figures.get("run_id"), path=write_report(spark, cfg, figures))

    return run_job("report", config, body, debug=args.debug, json_line=args.json)


if __name__ == "__main__":
    sys.exit(main())

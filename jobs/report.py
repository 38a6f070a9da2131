"""spark-submit job: write the HTML report of a finished run from its JSON run report."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from adrank.report.run import report_run
from adrank.runtime.cli import job_parser, parse_job_args
from adrank.runtime.runs import run_job


def main(argv: Sequence[str] | None = None) -> int:
    """Render ``--run`` (a ``_runs/<job>-<run id>.json``) as ``_reports/<run id>.html`` and ``latest.html``."""
    parser = job_parser("report", "Write a run's self-contained HTML report (and make it latest.html).")
    parser.add_argument("--run", required=True, metavar="JSON",
                        help="the run's JSON report, e.g. <storage.root>/_runs/pipeline-<run id>.json")
    args, config = parse_job_args(parser, argv)
    return run_job("report", config, lambda spark, cfg, report: report_run(spark, cfg, args.run),
                   debug=args.debug, json_line=args.json)


if __name__ == "__main__":
    sys.exit(main())

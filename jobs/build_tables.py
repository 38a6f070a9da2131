"""spark-submit job: raw inputs -> sku_images, training_examples (by date) and quarantine."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from adrank.runtime.cli import add_date_options, date_range, job_parser, parse_job_args
from adrank.runtime.runs import run_job
from adrank.tables.run import build_tables


def main(argv: Sequence[str] | None = None) -> int:
    """Build the feature tables for the chosen dates (all dates by default)."""
    parser = job_parser("build_tables", "Build sku_images, training_examples and quarantine.")
    add_date_options(parser)
    parser.add_argument(
        "--allow-empty-dates", action="store_true",
        help="days without click-log or LR-feature lines are really empty: replace their rows with "
        "nothing (without it such a day is an error and no table is touched)",
    )
    args, config = parse_job_args(parser, argv)
    dates = date_range(args, parser)
    return run_job(
        "build_tables", config,
        lambda spark, cfg, report: build_tables(spark, cfg, report, dates, args.allow_empty_dates),
        debug=args.debug, json_line=args.json,
    )


if __name__ == "__main__":
    sys.exit(main())

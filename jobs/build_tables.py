"""spark-submit job: raw inputs -> sku_images, training_examples (by date) and quarantine."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from adrank.runtime.cli import add_date_options, date_range, job_parser, parse_job_args
from adrank.runtime.runs import run_job
from adrank.tables.run import build_tables


def main(argv: Sequence[str] | None = None) -> int:
    """Build the feature tables for the chosen dates (all dates by default, the new ones with --new-dates)."""
    parser = job_parser("build_tables", "Build sku_images, training_examples and quarantine.")
    add_date_options(parser)
    parser.add_argument(
        "--allow-empty-dates", action="store_true",
        help="days without click-log or LR-feature lines are really empty: replace their rows with "
        "nothing (without it such a day is an error and no table is touched)",
    )
    parser.add_argument(
        "--new-dates", action="store_true",
        help="a scheduled night: build the click-log dates that training_examples does not hold yet "
        "(every date on the first night; the newest date again when none is new)",
    )
    args, config = parse_job_args(parser, argv)
    dates = date_range(args, parser)
    if args.new_dates and dates is not None:
        parser.error("give --new-dates or dates, not both")
    return run_job(
        "build_tables", config,
        lambda spark, cfg, report: build_tables(spark, cfg, report, dates, args.allow_empty_dates,
                                                new_dates=args.new_dates),
        debug=args.debug, json_line=args.json,
    )


if __name__ == "__main__":
    sys.exit(main())

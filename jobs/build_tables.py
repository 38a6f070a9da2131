"""spark-submit job: raw inputs -> sku_images, training_examples (by date) and quarantine."""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence

from adrank.build.run import DateRange, build_tables
from adrank.cli import job_parser, parse_job_args
from adrank.runs import run_job


def date_range(args: argparse.Namespace, parser: argparse.ArgumentParser) -> DateRange | None:
    """``--date D`` or ``--from D1 --to D2`` (inclusive); None means every date in the inputs."""
    start = args.date or args.start
    end = args.date or args.end or start
    if args.date and (args.start or args.end):
        parser.error("give --date or --from/--to, not both")
    if start is None:
        return None
    if end < start:
        parser.error(f"--to {end} is before --from {start}")
    return start, end


def main(argv: Sequence[str] | None = None) -> int:
    """Build the feature tables for the chosen dates (all dates by default)."""
    parser = job_parser("build_tables", "Build sku_images, training_examples and quarantine.")
    iso = datetime.date.fromisoformat
    parser.add_argument("--date", type=iso, help="build one date (YYYY-MM-DD)")
    parser.add_argument("--from", dest="start", type=iso, help="first date of a range")
    parser.add_argument("--to", dest="end", type=iso, help="last date of a range (inclusive)")
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
    )


if __name__ == "__main__":
    sys.exit(main())

"""Command-line plumbing shared by the jobs: ``--conf-file``, ``--set``, exit status 2.

Also ``python -m adrank.runtime.cli get KEY [--conf-file F] [--set k=v ...]``, which prints one
config value, and ``python -m adrank.runtime.cli log-file JOB RUN_ID [...]``, which prints the
run's log file (:func:`adrank.core.layout.log_path`); ``spark-submit.sh`` uses them to validate
the config, read the master and place the log before starting Spark.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Sequence

from adrank.core.config import Config, ConfigError, get_value, load_config, resolve_config_path
from adrank.core.layout import log_path

DEFAULT_CONF = "conf/local.yaml"


def job_parser(job: str, description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every job takes."""
    parser = argparse.ArgumentParser(prog=job, description=description)
    parser.add_argument("--conf-file", default=DEFAULT_CONF, help="YAML config (default: %(default)s)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config key, e.g. --set sample.seed=3 (repeatable)",
    )
    parser.add_argument(
        "--debug", action="store_true",
        help="on failure, print the full traceback too (the error is one line without it)",
    )
    parser.add_argument(
        "--verbose", action="store_true",
        help="spark-submit.sh runs: show the run's log live on the console too (it always goes to the log file)",
    )
    parser.add_argument(
        "--json", action="store_true",
        help="end the output with the run record as one JSON line (it is always written to "
        "<storage.root>/_runs/<job>-<run id>.json, whose path is printed)",
    )
    return parser


def add_date_options(parser: argparse.ArgumentParser) -> None:
    """``--date D`` or ``--from D1 --to D2``: the click-log dates to build."""
    iso = datetime.date.fromisoformat
    parser.add_argument("--date", type=iso, help="build one date (YYYY-MM-DD)")
    parser.add_argument("--from", dest="start", type=iso, help="first date of a range")
    parser.add_argument("--to", dest="end", type=iso, help="last date of a range (inclusive)")


def date_range(args: argparse.Namespace,
               parser: argparse.ArgumentParser) -> tuple[datetime.date, datetime.date] | None:
    """The dates of :func:`add_date_options` (inclusive); None means every date in the inputs."""
    start = args.date or args.start
    end = args.date or args.end or start
    if args.date and (args.start or args.end):
        parser.error("give --date or --from/--to, not both")
    if start is None:
        return None
    if end < start:
        parser.error(f"--to {end} is before --from {start}")
    return start, end


def parse_job_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, Config]:
    """Parse arguments and load the config; a config problem exits with status 2."""
    args = parser.parse_args(argv)
    return args, config_or_exit(args.conf_file, args.overrides, parser.prog)


def config_or_exit(conf_file: str, overrides: Sequence[str], prog: str) -> Config:
    """Load the config, or print a one-line error and exit with status 2."""
    try:
        return load_config(resolve_config_path(conf_file), overrides)
    except ConfigError as exc:
        print(f"{prog}: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> int:
    """``get KEY``: print one config value; ``log-file JOB RUN_ID``: the run's log (config validated first)."""
    parser = job_parser("adrank.runtime.cli", "Print one validated config value, or a run's log file.")
    parser.add_argument("command", choices=["get", "log-file"])
    parser.add_argument("names", nargs="+", metavar="KEY | JOB RUN_ID")
    args, config = parse_job_args(parser, argv)
    if args.command == "log-file":
        if len(args.names) != 2:
            parser.error("log-file takes JOB RUN_ID")
        print(log_path(config, *args.names))
        return 0
    if len(args.names) != 1:
        parser.error("get takes one KEY")
    try:
        print(get_value(config, args.names[0]))
    except ConfigError as exc:
        print(f"adrank.runtime.cli: config error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""spark-submit job: write the deterministic sample inputs (catalog, click log, features)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from adrank.runtime.cli import job_parser, parse_job_args
from adrank.runtime.runs import run_job
from adrank.sample.run import generate_data


def main(argv: Sequence[str] | None = None) -> int:
    """Generate sample inputs under ``inputs.root`` with the sizes of ``sample.*``."""
    parser = job_parser("generate_data", "Write deterministic sample inputs.")
    args, config = parse_job_args(parser, argv)
    return run_job("generate_data", config, generate_data, debug=args.debug, json_line=args.json)


if __name__ == "__main__":
    sys.exit(main())

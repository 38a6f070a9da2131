"""spark-submit job: run the whole pipeline (``demo`` is this job on conf/local.yaml)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from adrank.cli import job_parser, parse_job_args
from adrank.pipeline import run_pipeline
from adrank.runs import run_job


def main(argv: Sequence[str] | None = None) -> int:
    """Run every built pipeline step in order and print one JSON line of figures."""
    parser = job_parser("pipeline", "Run the adrank pipeline end to end.")
    _, config = parse_job_args(parser, argv)
    return run_job("pipeline", config, run_pipeline)


if __name__ == "__main__":
    sys.exit(main())

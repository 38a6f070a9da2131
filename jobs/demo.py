"""spark-submit job: the sample data (unless it is already there), then the whole pipeline."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from adrank.orchestration.pipeline import pipeline_parser, pipeline_selection, run_demo
from adrank.runtime.runs import run_job


def main(argv: Sequence[str] | None = None) -> int:
    """generate_data, then every pipeline task that is not current; the summary and the run record's path."""
    args, config, selection = pipeline_selection(
        pipeline_parser("demo", "Generate the sample data and run the adrank pipeline on it."), argv)
    return run_job("demo", config, lambda spark, cfg, report: run_demo(spark, cfg, report, selection),
                   debug=args.debug, json_line=args.json)


if __name__ == "__main__":
    sys.exit(main())

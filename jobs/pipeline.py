"""spark-submit job: the task graph (build_tables -> train -> embed_catalog -> ... -> recommend).

Tasks whose outputs are current are skipped; a rerun after a failure resumes at the failed
task. ``--from-task T`` reruns T and everything downstream; ``--only T1,T2`` just those.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from adrank.orchestration.pipeline import pipeline_parser, pipeline_selection, run_pipeline
from adrank.runtime.runs import run_job


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pipeline's tasks that are not current; print the summary and the run record's path."""
    args, config, selection = pipeline_selection(pipeline_parser("pipeline", "Run the adrank pipeline."), argv)
    return run_job("pipeline", config, lambda spark, cfg, report: run_pipeline(spark, cfg, report, selection),
                   debug=args.debug, json_line=args.json)


if __name__ == "__main__":
    sys.exit(main())

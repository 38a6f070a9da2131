"""spark-submit job: train a stage on Horovod ranks, evaluate it, register the SavedModel."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from adrank.cli import job_parser, parse_job_args
from adrank.runs import run_job
from adrank.train.run import STAGES, train


def main(argv: Sequence[str] | None = None) -> int:
    """Train ``--stage`` (pairwise | lr) on a pinned version of training_examples."""
    parser = job_parser("train", "Train, evaluate and register one model stage.")
    parser.add_argument("--stage", choices=STAGES, required=True, help="pairwise (stage 1) or lr (baseline)")
    parser.add_argument("--version", type=int, help="training_examples version to pin (default: latest)")
    args, config = parse_job_args(parser, argv)
    return run_job("train", config, lambda spark, cfg, report: train(spark, cfg, report, args.stage, args.version))


if __name__ == "__main__":
    sys.exit(main())

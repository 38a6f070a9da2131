"""spark-submit job: train a stage on Horovod ranks, evaluate it, register the SavedModel."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from adrank.runtime.cli import job_parser, parse_job_args
from adrank.runtime.runs import run_job
from adrank.train.run import INTERACTIONS, STAGES, train, with_joint_options


def main(argv: Sequence[str] | None = None) -> int:
    """Train ``--stage`` (pairwise | lr | joint) on a pinned version of training_examples."""
    parser = job_parser("train", "Train, evaluate and register one model stage.")
    parser.add_argument("--stage", choices=STAGES, required=True,
                        help="pairwise (stage 1), lr (baseline) or joint (stage 3: LR + embeddings)")
    parser.add_argument("--version", type=int, help="training_examples version to pin (default: latest)")
    parser.add_argument("--interaction", choices=INTERACTIONS,
                        help="joint: the interaction module(s) to train (default: train.interaction)")
    parser.add_argument("--force", action="store_true",
                        help="pairwise: retrain even within train.pairwise_every_days of the last retraining")
    parser.add_argument("--finetune-cnn", action="store_true",
                        help="joint: train the SKU and query towers end to end (GPUs; tiny on CPU)")
    args, config = parse_job_args(parser, argv)
    config = with_joint_options(config, args.interaction, args.finetune_cnn)
    return run_job("train", config, lambda spark, cfg, report: train(spark, cfg, report, args.stage, args.version,
                                                                    force=args.force),
                   debug=args.debug, json_line=args.json)


if __name__ == "__main__":
    sys.exit(main())

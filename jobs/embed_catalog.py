"""spark-submit job: embed new and changed SKU images with the registered CNN, MERGE into sku_embeddings."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from adrank.embed.run import embed_catalog
from adrank.runtime.cli import job_parser, parse_job_args
from adrank.runtime.runs import run_job


def main(argv: Sequence[str] | None = None) -> int:
    """Embed what changed in sku_images since the last run (everything with ``--full``)."""
    parser = job_parser("embed_catalog", "Keep sku_embeddings fresh and publish a serving snapshot.")
    parser.add_argument("--full", action="store_true", help="re-embed every SKU, whatever changed")
    args, config = parse_job_args(parser, argv)
    return run_job("embed_catalog", config, lambda spark, cfg, report: embed_catalog(spark, cfg, report, full=args.full),
                   debug=args.debug, json_line=args.json)


if __name__ == "__main__":
    sys.exit(main())

"""spark-submit job: similar SKUs, user and query recommendations from the embeddings, evaluated on the held-out day."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from adrank.core.errors import InputError
from adrank.recommend.run import recommend, similar_to_query
from adrank.runtime.cli import job_parser, parse_job_args
from adrank.runtime.runs import run_job


def main(argv: Sequence[str] | None = None) -> int:
    """Write similar_skus, user_recommendations, query_recommendations; or answer one ``--query``."""
    parser = job_parser("recommend", "Recommend SKUs for SKUs, users and queries from sku_embeddings.")
    parser.add_argument("--query", help="answer this query string from the serving snapshot and exit "
                                        "(no Spark, nothing written): one JSON line of sku_id and score")
    parser.add_argument("-k", type=int, help="with --query: how many SKUs (default: recommend.k)")
    args, config = parse_job_args(parser, argv)
    if args.query is not None:
        try:
            found = similar_to_query(config, args.query, args.k)
        except InputError as error:
            print(f"recommend: error: {error}", file=sys.stderr)
            return 1
        print(json.dumps({"query": args.query, "skus": [{"sku_id": i, "score": round(s, 6)} for i, s in found]}))
        return 0
    return run_job("recommend", config, recommend, debug=args.debug, json_line=args.json)


if __name__ == "__main__":
    sys.exit(main())

"""Stage 3's pinned inputs: ``sku_embeddings`` and the registered stage-1 model that made them.

Contract: :func:`pinned_embeddings` pins ``sku_embeddings`` at its latest version and
finds the registered stage-1 (``pairwise``) model every row of it came from; no table, a
mix of models, or a model gone from the registry is a one-line :class:`JointInputError`
and nothing is trained.
"""

from __future__ import annotations

import dataclasses

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession

from adrank.core import layout
from adrank.core.errors import InputError
from adrank.storage import delta
from adrank.train.registry import version_path


class JointInputError(InputError):
    """Stage 3 cannot start: no embeddings, or no registered stage-1 model they came from."""


@dataclasses.dataclass(frozen=True)
class EmbeddingInputs:
    """The pinned embeddings stage 3 reads and the stage-1 model that made them."""

    version: int
    frame: DataFrame
    model_version: int
    model_path: str


def pinned_embeddings(spark: SparkSession, path: str, registry_root: str) -> EmbeddingInputs:
    """``sku_embeddings`` (at ``path``) at its latest version and the registered stage-1 model it came from."""
    try:
        version = delta.pin_version(spark, path, None)
    except (AnalysisException, ValueError) as error:
        raise JointInputError(f"no {layout.SKU_EMBEDDINGS} table at {path} ({type(error).__name__}): "
                              "run `./spark-submit.sh embed_catalog` first; nothing was trained") from None
    frame = delta.read_delta(spark, path, version)
    models = [r.model_version for r in frame.select("model_version").distinct().collect()]
    if len(models) != 1:
        raise JointInputError(f"{layout.SKU_EMBEDDINGS} version {version} holds embeddings of "
                              f"{len(models)} stage-1 models ({sorted(models)}): run embed_catalog to finish; "
                              "nothing was trained")
    try:
        model_path, _ = version_path(registry_root, layout.PAIRWISE, models[0])
    except FileNotFoundError as error:
        raise JointInputError(f"{error}: the model behind {layout.SKU_EMBEDDINGS} version {version} is gone; "
                              "nothing was trained") from None
    return EmbeddingInputs(version, frame.select("sku_id", "embedding"), models[0], model_path)


__all__ = ["EmbeddingInputs", "JointInputError", "pinned_embeddings"]

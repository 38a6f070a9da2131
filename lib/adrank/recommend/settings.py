"""What a ``recommend`` run reads of the config: its settings, and the places it reads and writes."""

from __future__ import annotations

import dataclasses

from adrank.core import layout
from adrank.core.config import Config, FeaturesConfig, RecommendConfig


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a run reads of the config besides paths: ``recommend``, ``features`` (the behaviour
    means), ``train.holdout_days`` (the evaluation's dates) and ``sample.seed`` (the samples)."""

    recommend: RecommendConfig
    features: FeaturesConfig
    holdout_days: int
    seed: int

    @staticmethod
    def of(config: Config) -> Settings:
        """The settings of ``config``."""
        return Settings(config.recommend, config.features, config.train.holdout_days, config.sample.seed)


@dataclasses.dataclass(frozen=True)
class Places:
    """Where a run reads and writes: the snapshots, the registry, the tables it reads and the
    three it writes (``layout.RECOMMENDATION_TABLES`` -> path), and its index folder's parent."""

    serving: str
    registry: str
    examples: str
    embeddings: str
    sku_images: str
    tables: dict[str, str]
    index: str

    @staticmethod
    def of(config: Config) -> Places:
        """The places of ``config`` (:mod:`adrank.core.layout`)."""
        return Places(serving=layout.serving_root(config), registry=layout.registry_root(config),
                      examples=layout.table_path(config, layout.TRAINING_EXAMPLES),
                      embeddings=layout.table_path(config, layout.SKU_EMBEDDINGS),
                      sku_images=layout.table_path(config, layout.SKU_IMAGES),
                      tables={table: layout.table_path(config, table) for table in layout.RECOMMENDATION_TABLES},
                      index=layout.index_root(config))


__all__ = ["Places", "Settings"]

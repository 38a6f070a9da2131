"""Whether a ``recommend`` run is full or incremental, why, and on which basis it ranks.

**The basis.** Every list is computed on a basis (:class:`Basis`): the embedding model
version, the PCA whitening of similar SKUs (fitted on the catalog) and the popularity of
user and query lists (the prior and the always-scored popular SKUs, counted from the
clicks strictly before ``prior_end``). A basis is fitted when a model's lists are first
computed (no previous lists, a new embedding model, changed list settings) and kept while
the model is: nightly changes of a few SKUs or clicks do not move the whitening or the
prior, so a list no change can reach is the list a full recompute on the same basis gives.
On the IVF path the basis also holds each index's centroids (fitted by the basis's first run
and then reused: new and changed SKUs are assigned to them, as a trained faiss IVF index
adds vectors without retraining), so kept and recomputed lists probe the same clusters.
The prior (and the whitening and centroids) are refreshed with each new embedding model (stage 1 is
retrained every ``train.pairwise_every_days``). ``recommend.mode: full`` recomputes every
list on the current basis.

**The record.** Every commit of the three tables records its basis (the whitening as
base64 float32), the list settings, the search method, the ``sku_embeddings`` version it
was computed from and its ``as_of`` (:meth:`Plan.record`). A run is incremental when
``recommend.mode`` is incremental and each table's newest record has this run's basis
model, settings and search, an ``as_of`` no later than this run's, a ``sku_embeddings``
version still readable and at most :data:`MAX_CHANGED_FRACTION` of the catalog changed;
otherwise it is full, and :attr:`Plan.reason` says why in one line.

**The changes.** The SKUs added, changed (another embedding) or deleted between the
version a table was computed from and this run's: a diff of the two versions by
``sku_id`` (``sku_embeddings`` keeps no Change Data Feed; the diff reads two catalog
snapshots, never the history), one per distinct previous version (:class:`Changes`).
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from adrank.core import layout
from adrank.recommend import index, store
from adrank.recommend.neighbours import IVF, Whitening
from adrank.recommend.settings import Places, Settings
from adrank.storage import delta

FULL, INCREMENTAL = "full", "incremental"
LIST_SETTINGS = ("k", "candidates", "popular_candidates", "popularity_weight", "whitening_power", "lookback_days")
IVF_SETTINGS = ("ivf_lists", "ivf_nprobe", "ivf_train_per_list", "ivf_max_iterations")
BEHAVIOUR_SETTINGS = ("behaviour_half_life_hours", "behaviour_max_clicks", "behaviour_lookback_days")
MAX_CHANGED_FRACTION = 0.5  # above it a full recompute costs less than the reverse checks


@dataclasses.dataclass(frozen=True, eq=False)
class Basis:
    """What every list of a model's lineage is ranked on (see the module docstring)."""

    model_version: int
    prior_end: str  # clicks strictly before it make the popularity prior and the popular SKUs
    whitening: Whitening | None
    # IVF only: each index's unit centroids (``similar``, ``requests``), fitted by the basis's first
    # run and reused by every later run on it, so that kept and recomputed lists probe the same lists
    centroids: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The basis as a JSON object (the arrays as base64 float32, little-endian)."""
        whitening = None if self.whitening is None else {
            "dim": int(self.whitening.mean.shape[0]), "mean": _encoded(self.whitening.mean),
            "matrix": _encoded(self.whitening.matrix)}
        found: dict[str, Any] = {"model_version": self.model_version, "prior_end": self.prior_end,
                                 "whitening": whitening}
        if self.centroids:
            found["centroids"] = {name: {"shape": list(c.shape), "values": _encoded(c)}
                                  for name, c in sorted(self.centroids.items())}
        return found

    @staticmethod
    def of_record(record: dict[str, Any]) -> Basis:
        """The basis a record holds (:meth:`record`)."""
        found = record.get("whitening")
        whitening = None if found is None else Whitening(
            _decoded(found["mean"], (found["dim"],)), _decoded(found["matrix"], (found["dim"], found["dim"])))
        centroids = {name: _decoded(c["values"], tuple(c["shape"])) for name, c in (record.get("centroids") or {}).items()}
        return Basis(int(record["model_version"]), str(record["prior_end"]), whitening, centroids)


def _encoded(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def _decoded(text: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(shape).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Previous:
    """A table's newest version and what it was computed from (its commit record)."""

    version: int
    embeddings_version: int
    as_of: str


@dataclasses.dataclass(frozen=True)
class Changes:
    """``sku_id, old, new`` (embeddings; null when absent) of the SKUs added, changed or deleted
    since ``since_version`` of ``sku_embeddings`` (cached), with their counts."""

    since_version: int
    frame: DataFrame
    added: int
    changed: int
    deleted: int

    @property
    def touched(self) -> DataFrame:
        """``sku_id`` of every changed, added or deleted SKU."""
        return self.frame.select("sku_id")

    def vectors(self, *sides: str) -> np.ndarray:
        """The ``sides`` (``old``, ``new``) embeddings of the changes, ``[n, d]`` float32 (on the driver)."""
        rows = [v for side in sides for v in (r[0] for r in self.frame.where(F.col(side).isNotNull())
                                              .select(side).collect())]
        return np.array(rows, dtype=np.float32).reshape(len(rows), -1)

    def figures(self) -> dict[str, int]:
        """What changed, as counts."""
        return {"since_sku_embeddings_version": self.since_version, "added": self.added, "changed": self.changed,
                "deleted": self.deleted}


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """A run's mode, its reason, its basis, and (incremental) each table's previous version and changes."""

    mode: str
    reason: str
    basis: Basis
    settings: dict[str, Any]
    previous: dict[str, Previous] = dataclasses.field(default_factory=dict)
    changes: dict[int, Changes] = dataclasses.field(default_factory=dict)  # previous embeddings version -> changes

    def record(self) -> dict[str, Any]:
        """What each table's commit records besides the run's versions."""
        return {"mode": self.mode, "reason": self.reason, "basis": self.basis.record(), "settings": self.settings}

    def changes_of(self, table: str) -> Changes:
        """The changes since the version ``table`` was computed from."""
        return self.changes[self.previous[table].embeddings_version]

    def figures(self) -> dict[str, Any]:
        """The run record's ``recommend.plan``: mode, reason, the basis and what changed."""
        return {"mode": self.mode, "reason": self.reason, "basis_model_version": self.basis.model_version,
                "prior_end": self.basis.prior_end,
                "changes": [c.figures() for _, c in sorted(self.changes.items())]}

    def release(self) -> None:
        """Unpersist the cached changes."""
        for changes in self.changes.values():
            changes.frame.unpersist()


def list_settings(settings: Settings, method: str) -> dict[str, Any]:
    """What shapes a list besides the basis: the ``recommend`` and behaviour settings, the search method
    and, for IVF, the index's settings."""
    found: dict[str, Any] = {key: getattr(settings.recommend, key) for key in LIST_SETTINGS}
    found.update({key: getattr(settings.features, key) for key in BEHAVIOUR_SETTINGS})
    if method == IVF:
        found.update({key: getattr(settings.recommend, key) for key in IVF_SETTINGS})
    return {**found, "search": method}


def plan_run(spark: SparkSession, settings: Settings, places: Places, embeddings: DataFrame, versions: dict[str, int],
             method: str, as_of: str) -> Plan:
    """The plan of a run reading ``embeddings`` (``versions``: its pinned inputs) whose lists are as of ``as_of``."""
    wanted = list_settings(settings, method)
    records = {table: _newest_record(spark, path) for table, path in places.tables.items()}
    model = int(versions["embedding_model"])
    bases = {str(r[1].get("basis")) for r in records.values() if r is not None}
    kept = (None if None in records.values() or len(bases) != 1 else next(iter(records.values())))
    basis = None
    if kept is not None and kept[1].get("basis") and kept[1].get("settings") == wanted:
        old = Basis.of_record(kept[1]["basis"])
        basis = old if old.model_version == model else None
    reason = why_full(settings, records, wanted, model, as_of, basis, versions)
    if basis is None:
        basis = Basis(model, as_of, index.fit_whitening(embeddings, settings.recommend.whitening_power)
                      if settings.recommend.whitening_power else None)
    if reason is not None:
        return Plan(FULL, reason, basis, wanted)
    previous = {table: Previous(found[0], int(found[1]["sku_embeddings_version"]), str(found[1]["as_of"]))
                for table, found in records.items() if found is not None}
    try:
        changes = {v: embedding_changes(spark, places.embeddings, v, embeddings)
                   for v in sorted({p.embeddings_version for p in previous.values()})}
    except Exception as error:  # noqa: BLE001 - an unreadable old version (vacuumed) means: recompute all
        return Plan(FULL, f"{layout.SKU_EMBEDDINGS} of the previous lists is unreadable ({type(error).__name__})",
                    basis, wanted)
    plan = Plan(INCREMENTAL, "the embedding model and list settings are the previous run's", basis, wanted,
                previous, changes)
    catalog = embeddings.count()
    most = max((c.added + c.changed + c.deleted for c in changes.values()), default=0)
    if most > MAX_CHANGED_FRACTION * max(catalog, 1):
        plan.release()
        return Plan(FULL, f"{most} of {catalog} SKUs changed (more than {MAX_CHANGED_FRACTION:.0%})", basis, wanted)
    return plan


def _newest_record(spark: SparkSession, path: str) -> tuple[int, dict[str, Any]] | None:
    """The newest version of the table at ``path`` and its run's record (None: no table)."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return None
    version = delta.latest_version(spark, path)
    return version, store.run_record(spark, path, version)


def why_full(settings: Settings, records: dict[str, tuple[int, dict[str, Any]] | None], wanted: dict[str, Any],
              model: int, as_of: str, basis: Basis | None, versions: dict[str, int]) -> str | None:
    """Why the run recomputes every list (one line), or None: it can be incremental."""
    if settings.recommend.mode == FULL:
        return "recommend.mode is full"
    missing = sorted(table for table, found in records.items() if found is None or not found[1].get("basis"))
    if missing:
        return f"no previous lists with a basis in {', '.join(missing)}"
    found = [r[1] for r in records.values() if r is not None]
    models = sorted({int(r["basis"]["model_version"]) for r in found})
    if models != [model]:
        return f"a new embedding model: v{', v'.join(map(str, models))} -> v{model}"
    changed = sorted({k for r in found for k in set(wanted) | set(r.get("settings") or {})
                      if (r.get("settings") or {}).get(k) != wanted.get(k)})
    if changed:
        return f"list settings changed: {', '.join(changed)}"
    if basis is None:
        return "the tables were computed on different bases"
    if any(str(r["as_of"]) > as_of for r in found):
        return f"the previous lists are as of a later time than this run's ({as_of})"
    if any(int(r["sku_embeddings_version"]) > versions["sku_embeddings"] for r in found):
        return f"the previous lists read a newer {layout.SKU_EMBEDDINGS} than v{versions['sku_embeddings']}"
    return None


def embedding_changes(spark: SparkSession, path: str, since: int, current: DataFrame) -> Changes:
    """The SKUs whose embedding differs between version ``since`` of ``sku_embeddings`` (at ``path``) and
    ``current`` (``sku_id, embedding``): cached, counted."""
    old = delta.read_delta(spark, path, since).select("sku_id", F.col("embedding").alias("old"))
    new = current.select("sku_id", F.col("embedding").alias("new"))
    frame = old.join(new, "sku_id", "full_outer").where(~F.col("old").eqNullSafe(F.col("new"))).cache()
    counts = frame.agg(F.count(F.when(F.col("old").isNull(), 1)).alias("added"),
                       F.count(F.when(F.col("new").isNull(), 1)).alias("deleted"),
                       F.count("*").alias("all")).collect()[0]
    return Changes(since, frame, int(counts.added), int(counts.all - counts.added - counts.deleted), int(counts.deleted))


__all__ = ["FULL", "INCREMENTAL", "MAX_CHANGED_FRACTION", "Basis", "Changes", "Plan", "Previous", "why_full",
           "embedding_changes", "list_settings", "plan_run"]

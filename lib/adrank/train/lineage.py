"""Which dates a stage trains on, and from what: a registered version's lineage (pure, no Spark).

Contract: :func:`plan` decides how one model is trained tonight from ``train.*``, the
training dates of the pinned ``training_examples``, what shapes the model
(:func:`model_shape`) and its newest registered version (:class:`Parent`, found by
:func:`find_parent`). The answer is a :class:`Lineage`:

- ``incremental``: the parent's weights and optimizer state (its kept training state,
  ``train_state`` in its metadata) on the dates it has not seen, with the configured
  steps scaled to the new rows (:meth:`Lineage.train_config`);
- ``full``: random weights on the newest ``train.window_days`` dates (0 = all), because
  ``train.mode`` is ``full``, there is no parent (or none with a training state), or a
  shaping setting differs from the parent's (the reason names it);
- ``kept``: nothing to train (the parent has seen every date), or stage 1 inside its
  retraining period (``train.pairwise_every_days`` days of data, unless forced).

Every registered version records ``mode``, ``mode_reason``, ``parent_version``,
``dates_trained`` (the parent's plus the new ones) and ``shape`` (:meth:`Lineage.metadata`).
Stage 3 trains several modules on the same materialised dates: :func:`combined` makes them
agree (all full, with the first reason, when they would not).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adrank.core import layout
from adrank.core.config import Config, TrainConfig
from adrank.train import registry

FULL, INCREMENTAL, KEPT = "full", "incremental", "kept"
STEP_FLOOR_DIVISOR = 10  # an incremental run takes at least a tenth of the configured steps


@dataclass(frozen=True)
class Parent:
    """A registered version a run may continue: its number, folder and metadata."""

    version: int
    path: str
    metadata: Mapping[str, Any]

    @property
    def train_state(self) -> str:
        """The path prefix of its kept checkpoint (weights and optimizer state); empty when none."""
        relative = str(self.metadata.get("train_state") or "")
        return f"{self.path}/{relative}" if relative else ""

    @property
    def dates_trained(self) -> list[dt.date]:
        """Every date it has trained on, ascending."""
        return sorted(dt.date.fromisoformat(str(d)) for d in self.metadata.get("dates_trained") or ())


@dataclass(frozen=True)
class Lineage:
    """How one model is trained in this run (see the module docstring).

    Attributes:
        mode: ``full``, ``incremental`` or ``kept``.
        reason: One line: why this mode.
        train_dates: The dates this run trains on (none when kept).
        dates_trained: Every date the resulting version has trained on.
        shape: What shapes the model (:func:`model_shape`), recorded for the next run.
        parent_version: The version continued (incremental) or kept; None for a full run.
        warm_start: The parent's training state (incremental only).
        new_row_share: The new dates' rows over the rows of every date trained (incremental).
    """

    mode: str
    reason: str
    train_dates: tuple[dt.date, ...]
    dates_trained: tuple[dt.date, ...]
    shape: Mapping[str, Any] = field(default_factory=dict)
    parent_version: int | None = None
    warm_start: str = ""
    new_row_share: float = 1.0

    @property
    def line(self) -> str:
        """``<mode>: <reason>``: what the console says."""
        return f"{self.mode}: {self.reason}" if self.reason else self.mode

    def train_config(self, train: TrainConfig, steps_field: str) -> TrainConfig:
        """``train`` with an incremental run's steps: the configured steps times the new rows'
        share, at least a tenth of them (so a full run and its chain make as many passes per row)."""
        if self.mode != INCREMENTAL:
            return train
        configured = int(getattr(train, steps_field))
        steps = max(math.ceil(configured * self.new_row_share), math.ceil(configured / STEP_FLOOR_DIVISOR))
        changes: dict[str, Any] = {steps_field: min(configured, max(steps, 1))}
        return dataclasses.replace(train, **changes)

    def figures(self) -> dict[str, Any]:
        """What the run record holds of it."""
        return {"mode": self.mode, "mode_reason": self.reason, "parent_version": self.parent_version,
                "dates_trained": [str(d) for d in self.dates_trained]}

    def metadata(self) -> dict[str, Any]:
        """What the registered version's metadata holds of it."""
        return {**self.figures(), "shape": dict(self.shape)}


def model_shape(config: Config, stage: str, interaction: str = "",
                embedding_model_version: int | None = None) -> dict[str, Any]:
    """The settings that shape a stage's variables or what its inputs mean: a change trains it in full."""
    train, features = config.train, config.features
    towers = {"train.tower": train.tower, "train.tower_width": train.tower_width,
              "train.embedding_dim": train.embedding_dim, "features.image_size": features.image_size}
    hashing = {"features.hash_bits": features.hash_bits, "features.max_sparse_ids": features.max_sparse_ids,
               "features.crosses": list(features.crosses)}
    shape: dict[str, Any] = {"train.gradient_mode": train.gradient_mode}
    if stage == layout.PAIRWISE:
        return {**shape, **towers}
    if stage == layout.LR:
        return {**shape, **hashing}
    shape.update(hashing, **{"train.interaction": interaction, "train.embedding_dim": train.embedding_dim,
                             "train.dnn_hidden": train.dnn_hidden, "train.finetune_cnn": train.finetune_cnn,
                             "stage-1 model": f"pairwise v{embedding_model_version}"})
    return {**shape, **(towers if train.finetune_cnn else {})}


def shape_change(before: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """The first shaping setting that differs, as ``<key> <before> -> <now>``; empty when none."""
    for key, value in now.items():
        if key not in before:
            return f"{key} not recorded -> {value}"
        if before[key] != value:
            return f"{key} {before[key]} -> {value}"
    return ""


def find_parent(root: str, stage: str, match: Mapping[str, Any] | None = None) -> Parent | None:
    """The newest registered version of ``stage`` whose metadata holds ``match``; None when none."""
    for version in reversed(registry.versions(root, stage)):
        try:
            path, metadata = registry.version_path(root, stage, version)
        except FileNotFoundError:
            continue
        if all(metadata.get(key) == value for key, value in (match or {}).items()):
            return Parent(version, path, metadata)
    return None


def full_run(train: TrainConfig, dates: Sequence[dt.date], shape: Mapping[str, Any], reason: str) -> Lineage:
    """A full run on the newest ``train.window_days`` of ``dates`` (0 = all)."""
    dates = sorted(dates)
    window = dates[-train.window_days:] if train.window_days else dates
    if len(window) < len(dates):
        reason += f"; train.window_days={train.window_days}: from {window[0]}"
    return Lineage(FULL, reason, tuple(window), tuple(window), shape)


def plan(train: TrainConfig, stage: str, dates: Sequence[dt.date], rows_per_date: Mapping[dt.date, int],
         shape: Mapping[str, Any], parent: Parent | None, *, force: bool = False) -> Lineage:
    """How one model trains on the training ``dates`` (see the module docstring)."""
    if train.mode == FULL:
        return full_run(train, dates, shape, "train.mode is full")
    if parent is None:
        return full_run(train, dates, shape, f"no registered {stage} model yet")
    if not parent.train_state or "dates_trained" not in parent.metadata:
        return full_run(train, dates, shape, f"v{parent.version} kept no training state to start from")
    changed = shape_change(parent.metadata.get("shape") or {}, shape)
    if changed:
        return full_run(train, dates, shape, f"{changed} since v{parent.version}")
    seen = parent.dates_trained
    new = sorted(set(dates) - set(seen))
    kept = Lineage(KEPT, "", (), tuple(seen), shape, parent.version)
    last = seen[-1] if seen else None
    if not new:
        return dataclasses.replace(kept, reason=f"nothing to train, v{parent.version} has trained on every "
                                                f"training date (last {last})")
    every = train.pairwise_every_days
    if stage == layout.PAIRWISE and not force and every and last is not None and (new[-1] - last).days < every:
        return dataclasses.replace(kept, reason=f"retrained every {every} days, last on {last}")
    trained = sorted(set(seen) | set(new))
    share = sum(rows_per_date.get(d, 0) for d in new) / max(1, sum(rows_per_date.get(d, 0) for d in trained))
    return Lineage(INCREMENTAL, f"v{parent.version} + {len(new)} new date{'' if len(new) == 1 else 's'} "
                                f"{new[0]}{'..' + str(new[-1]) if len(new) > 1 else ''}",
                   tuple(new), tuple(trained), shape, parent.version, parent.train_state, share)


def combined(train: TrainConfig, dates: Sequence[dt.date], plans: Mapping[str, Lineage]) -> dict[str, Lineage]:
    """Plans of modules trained on one materialised set of dates: unchanged when they agree
    (same mode and dates), else all full, the reason naming each module's plan."""
    first = next(iter(plans.values()))
    if all(p.mode == first.mode and p.train_dates == first.train_dates for p in plans.values()):
        return dict(plans)
    reason = "the modules differ: " + "; ".join(f"{n} {p.line}" for n, p in plans.items())
    return {n: full_run(train, dates, p.shape, reason) for n, p in plans.items()}


__all__ = ["FULL", "INCREMENTAL", "KEPT", "Lineage", "Parent", "combined", "find_parent", "full_run",
           "model_shape", "plan", "shape_change"]

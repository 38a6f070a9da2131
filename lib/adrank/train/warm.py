"""A stage driver's first step: plan each model's lineage, or keep the registered version.

Contract: :func:`planned` looks up the parent of every model a stage trains (stage 1 and
the LR: the stage's newest version; stage 3: the newest version of each interaction
module), plans each (:func:`adrank.train.lineage.plan`), puts the mode and its reason in
the stage's figures and on the console (one line), and returns the
:class:`~adrank.train.pinned.PinnedData` whose ``train_dates`` are the ones to train on
(an incremental run's new dates, a full run's window). When the plan is ``kept``,
:func:`keep` fills the figures from the kept version (its model version and metrics) and
the driver trains and registers nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from adrank.core import layout
from adrank.runtime.console import say
from adrank.train.lineage import KEPT, combined, find_parent, plan
from adrank.train.pinned import PinnedData
from adrank.train.registry import version_path


def planned(pinned: PinnedData, shapes: Mapping[str, Mapping[str, Any]],
            matches: Mapping[str, Mapping[str, Any]] | None = None) -> PinnedData:
    """``pinned`` with the lineage of each model of ``shapes`` (name -> its shape; ``matches``:
    name -> the metadata its parent holds) and the dates they train on."""
    config, root = pinned.config, layout.registry_root(pinned.config)
    plans = {name: plan(config.train, pinned.stage, pinned.train_dates, pinned.rows_per_date, shape,
                        find_parent(root, pinned.stage, (matches or {}).get(name)), force=pinned.force)
             for name, shape in shapes.items()}
    lineages = combined(config.train, pinned.train_dates, plans)
    first = next(iter(lineages.values()))
    figures = pinned.figures
    figures.update(first.figures())
    say(f"{pinned.stage}: {first.line}")
    if first.mode == KEPT:
        return dataclasses.replace(pinned, lineages=lineages)
    dates = sorted(first.train_dates)
    figures["train_dates"] = [str(d) for d in dates]
    figures["train_rows"] = sum(pinned.rows_per_date.get(d, 0) for d in dates)
    return dataclasses.replace(pinned, train_dates=dates, lineages=lineages)


def is_kept(pinned: PinnedData) -> bool:
    """Whether the plan keeps the registered version (nothing to train)."""
    return any(lineage.mode == KEPT for lineage in pinned.lineages.values())


def keep(pinned: PinnedData) -> None:
    """The stage's figures from the kept version: ``model_version``, ``metrics`` (stage 3:
    ``comparison`` and ``best_module``, those of the newest version); nothing is trained."""
    figures = pinned.figures
    figures["train_dates"], figures["train_rows"] = [], 0
    versions = [lineage.parent_version for lineage in pinned.lineages.values() if lineage.parent_version]
    newest = max(versions)
    _, metadata = version_path(layout.registry_root(pinned.config), pinned.stage, newest)
    figures["model_version"] = newest
    figures["metrics"] = metadata.get("metrics") or {}
    if pinned.stage == layout.JOINT:
        figures["comparison"] = metadata.get("comparison") or {}
        figures["best_module"] = metadata.get("interaction")


__all__ = ["is_kept", "keep", "planned"]

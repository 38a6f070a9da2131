"""Starts a training stage on Horovod ranks: horovodrun's Python API or Spark executors.

Contract: :func:`train_on_ranks` is what a stage's driver function calls: it makes the
:class:`~adrank.train.ranks.settings.RankSettings` of the run from the config
(:func:`make_settings`, ``train.*`` included: seed, log interval, step watchdog,
determinism, TensorBoard folder), launches, and puts the ranks' ``training`` figures in
the report. :func:`launch` runs :func:`adrank.train.ranks.loop.train_stage` on
``settings.ranks`` processes (Gloo, no MPI) and returns rank 0's metrics. ``launcher:
horovodrun`` uses ``horovod.runner.run`` on this machine (each rank capped at
``threads_per_rank`` threads); ``spark`` uses ``horovod.spark.run`` on the active
SparkSession's executors (one task per rank; ``settings.checkpoint_root`` must be shared
by executors and driver); ``auto`` picks ``spark`` when a non-local SparkSession is active.
A rank that fails, dies or hangs (the loop's watchdog) ends the job: :func:`launch` raises
:class:`TrainingFailed` with one line naming the stage and the last checkpoint step;
launching again with the same settings resumes from it. A launch that ends by any
exception (a rank's failure, the driver's stop: :class:`adrank.runtime.processes.Stopped`) ends the
processes horovodrun started (they run in sessions of their own), and each rank exits by
itself when the driver is gone (``ADRANK_DRIVER_PID``; :mod:`adrank.runtime.processes`), so no rank
outlives its driver, even a SIGKILLed one. horovodrun starts ranks with
``multiprocessing`` (spawn): the calling script must guard its entry point. pyspark is
imported lazily, only to find the SparkSession and to call ``horovod.spark.run``. While
the ranks train, rank 0's progress is drawn as a tqdm bar on the console
(:mod:`adrank.train.progress`; a quiet ``spark-submit.sh`` run, or a terminal).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from adrank.core import layout
from adrank.core.config import Config, TrainConfig
from adrank.runtime.console import console_stream
from adrank.runtime.processes import driver_environment, ended_with_block
from adrank.train.progress import progress_bar
from adrank.train.ranks.failures import clear_failures, recorded_failures
from adrank.train.ranks.loop import StepHook, train_stage
from adrank.train.ranks.settings import (
    DataVersion,
    FeatureSizes,
    RankSettings,
    Stage,
    checkpoint_dir,
    last_checkpoint_step,
)
from adrank.train.ranks.stages import rank_stage

if TYPE_CHECKING:
    from adrank.train.pinned import Figures, PinnedData
    from adrank.train.ranks.data import DatasetFn

LAUNCHERS: tuple[str, ...] = ("horovodrun", "spark")
DEFAULT_START_TIMEOUT_S = 120
SHUTDOWN_ECHO = "Horovod has been shut down"
RankFn = Callable[..., dict[str, object]]
# The ranks' figures a stage keeps in the report (``figures["training"]``).
TRAINING_FIGURES = ("start_step", "final_step", "steps_run", "seconds", "steps_per_s", "loss", "ranks",
                    "launcher", "losses", "tensorboard_dir", "holdout_curve", "initial_state_digests",
                    "final_state_digest")


class TrainingFailed(RuntimeError):
    """A training stage failed on some rank; the message says where to resume."""


def make_settings(
    config: Config,
    *,
    stage: str | Stage,
    data_version: DataVersion,
    files: Mapping[str, Sequence[str]] | None = None,
    holdout_files: Mapping[str, Sequence[str]] | None = None,
    checkpoint_root: str | None = None,
    run_id: str = "",
    train: TrainConfig | None = None,
    init_from: str = "",
    warm_start: str = "",
) -> RankSettings:
    """The settings of one stage run; ``checkpoint_root`` defaults to ``layout.checkpoint_root``.

    ``stage`` is the rank-side spec (a driver passes its table's) or a stage name. ``train``
    replaces ``config.train`` (stage 3 trains one settings per interaction module).

    Raises:
        ValueError: Unknown stage name.
    """
    features = config.features
    return RankSettings(
        spec=stage if isinstance(stage, Stage) else rank_stage(stage),
        train=train if train is not None else config.train,
        features=FeatureSizes(features.image_size, features.hash_bits, features.max_sparse_ids),
        data_version=_plain(data_version),
        checkpoint_root=str(checkpoint_root if checkpoint_root is not None else layout.checkpoint_root(config)),
        files=_file_lists(files), holdout_files=_file_lists(holdout_files),
        run_id=run_id, init_from=str(init_from), warm_start=str(warm_start),
    )


def _file_lists(files: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """Per role, the files as a tuple of strings (picklable, frozen)."""
    return {role: tuple(str(f) for f in paths) for role, paths in (files or {}).items()}


def _plain(value: DataVersion) -> DataVersion:
    """A mapping (also a read-only proxy) -> a plain dict."""
    return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else value


def train_on_ranks(pinned: PinnedData, data_version: DataVersion, files: Mapping[str, Sequence[str]],
                   holdout_files: Mapping[str, Sequence[str]], *, train_config: TrainConfig | None = None,
                   init_from: str = "", name: str = "", figures: Figures | None = None) -> RankSettings:
    """Trains the pinned stage on the ranks; the settings it ran with (to load the checkpoint).

    ``holdout_files`` (per role, live files of the held-out side) give the ranks the sample
    of the training curve's held-out metric. ``train_config`` replaces ``config.train``
    (one stage-3 module); ``name`` labels the timing (default: the stage); ``figures``
    receive ``training`` (default: the stage's). The run's lineage (``pinned.lineage(name)``)
    gives the steps (an incremental run's are scaled to its new rows) and the warm start.
    """
    report = pinned.report
    lineage = pinned.lineage(name)
    train = lineage.train_config(train_config or pinned.config.train, pinned.spec.rank.steps_field)
    settings = make_settings(pinned.config, stage=pinned.spec.rank, data_version=data_version, files=files,
                             holdout_files=holdout_files, run_id=report.run_id, train=train,
                             init_from=init_from, warm_start=lineage.warm_start)
    with report.timed(f"{name or pinned.stage}_training"):
        result = launch(settings)
    (pinned.figures if figures is None else figures)["training"] = {
        k: result[k] for k in TRAINING_FIGURES if k in result}
    return settings


def launch(settings: RankSettings, *, dataset_fn: DatasetFn | None = None,
           on_step: StepHook | None = None,
           start_timeout: int = DEFAULT_START_TIMEOUT_S) -> dict[str, object]:
    """Runs ``train_stage(settings, dataset_fn, on_step)`` on ``settings.ranks`` ranks.

    Args:
        settings: From :func:`make_settings` (stage, launcher,
            ranks, threads per rank and everything the ranks read).
        dataset_fn: Passed to the ranks (pickled with cloudpickle); None = Petastorm.
        on_step: Passed to the ranks: ``on_step(step, rank)`` after every step.
        start_timeout: Seconds for the ranks to start and rendezvous.

    Returns:
        Rank 0's metrics dict, with ``launcher``: the launcher that ran the ranks
        (``horovodrun`` or ``spark``; ``auto`` resolved).

    Raises:
        TrainingFailed: A rank failed or died; names the stage and last checkpoint.
        ValueError: Unknown launcher.
    """
    launcher = resolve_launcher(settings.launcher)
    args = (settings, dataset_fn, on_step)
    clear_failures(settings)
    try:
        with progress_bar(settings, settings.steps, console_stream()):
            with driver_signals_kept(), ended_with_block():
                if launcher == "spark":
                    results = _run_on_spark(train_stage, args, settings.ranks, start_timeout)
                else:
                    results = _run_with_horovodrun(train_stage, args, settings.ranks,
                                                   settings.threads_per_rank, start_timeout)
    except Exception as exc:  # noqa: BLE001 - every runner error becomes one clear line
        raise TrainingFailed(failure_message(settings, launcher, exc)) from exc
    if not results or results[0] is None:
        raise TrainingFailed(failure_message(settings, launcher, "rank 0 returned nothing"))
    return {**results[0], "launcher": launcher}


def failure_message(settings: RankSettings, launcher: str, cause: BaseException | str) -> str:
    """One line: the stage, the cause's first line, the last checkpoint step."""
    stage = settings.stage
    step = last_checkpoint_step(settings)
    text = str(cause)
    rank = re.search(r"Process name:\s*(\S+)\s+Exit code:\s*(-?\d+)", text)
    reasons = recorded_failures(settings)
    # A rank whose peer died fails too ("Horovod has been shut down"): an echo, not a cause.
    causes = {r: line for r, line in reasons.items() if SHUTDOWN_ECHO not in line}
    reasons = causes or reasons
    if rank:
        code = int(rank.group(2))
        signal_number = -code if code < 0 else code - 128 if code > 128 else 0
        how = f"was killed by signal {signal_number}" if signal_number else f"exited with status {code}"
        first = f"rank {rank.group(1)} {how} (the launcher stopped the other ranks)"
    else:
        first = (text.strip().splitlines() or [type(cause).__name__])[0][:300]
    if reasons:
        first += "; " + "; ".join(f"rank {r}: {line[:200]}" for r, line in sorted(reasons.items()))
    where = (f"last checkpoint at step {step} ({checkpoint_dir(settings)}); "
             "launch again to resume from it") if step is not None else "no checkpoint yet"
    return f"training stage '{stage}' failed ({launcher}): {first}; {where}"


def resolve_launcher(launcher: str) -> str:
    """``horovodrun`` or ``spark``; ``auto`` looks at the active SparkSession's master."""
    if launcher in LAUNCHERS:
        return launcher
    if launcher != "auto":
        raise ValueError(f"train.launcher must be auto, horovodrun or spark, got {launcher!r}")
    master = _active_spark_master()
    return "spark" if master and not master.startswith("local") else "horovodrun"


def _active_spark_master() -> str | None:
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return None
    session = SparkSession.getActiveSession()
    return session.sparkContext.master if session is not None else None


def _run_with_horovodrun(fn: RankFn, args: tuple[object, ...], ranks: int, threads: int,
                         start_timeout: int) -> list[dict[str, object] | None]:
    import horovod.runner

    with _rank_env(threads):
        return horovod.runner.run(fn, args=args, num_proc=ranks, hosts=f"localhost:{ranks}",
                                  use_gloo=True, start_timeout=start_timeout)


def _run_on_spark(fn: RankFn, args: tuple[object, ...], ranks: int,
                  start_timeout: int) -> list[dict[str, object] | None]:
    import horovod.spark

    return horovod.spark.run(fn, args=args, num_proc=ranks, use_gloo=True,
                             start_timeout=start_timeout, verbose=1)


@contextlib.contextmanager
def driver_signals_kept() -> Iterator[None]:
    """Horovod's launch leaves the driver's SIGINT and SIGTERM handlers as they were.

    ``horovod.runner.gloo_run.launch_gloo`` (behind both launchers) replaces them with a
    handler that only sets an event for its launchers, and never puts them back: from the
    first launch on, the driver ignored SIGTERM and kept running. Here the launch gets a
    plain event instead, so a stop raises :class:`adrank.runtime.processes.Stopped` in the driver
    (whose way out ends the ranks: :func:`adrank.runtime.processes.ended_with_block`); the
    handlers are also put back after the launch, whatever Horovod did.
    """
    from horovod.runner import gloo_run

    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    original = getattr(gloo_run, "register_shutdown_event", None)
    gloo_run.register_shutdown_event = threading.Event  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if original is not None:
            gloo_run.register_shutdown_event = original  # type: ignore[attr-defined]
        if threading.current_thread() is threading.main_thread():
            for number, handler in handlers.items():
                if handler is not None:  # None: a handler not set from Python, left alone
                    signal.signal(number, handler)


@contextlib.contextmanager
def _rank_env(threads: int) -> Iterator[None]:
    """Thread caps and this driver's pid for the rank processes (they inherit this process's environment)."""
    added = {**{name: str(threads) for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                                                "TF_NUM_INTEROP_THREADS")}, **driver_environment()}
    saved = {name: os.environ.get(name) for name in added}
    os.environ.update(added)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


__all__ = ["LAUNCHERS", "TRAINING_FIGURES", "TrainingFailed", "failure_message", "launch", "make_settings",
           "resolve_launcher", "train_on_ranks"]

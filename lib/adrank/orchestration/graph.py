"""The pipeline's task graph: each task's name, job, dependencies, what it runs and how it reports.

One definition feeds the ``pipeline`` job (:mod:`adrank.orchestration.pipeline` runs it), the scheduled
jobs under ``conf/`` and ``databricks.yml`` (a test checks they mirror it) and the README.
``demo`` is :data:`DEMO_TASKS`: the sample generator, then the pipeline.

A task carries its body (:mod:`adrank.orchestration.bodies`: a function that imports its job
when called, so this module stays light), its headline (:mod:`adrank.orchestration.headlines`)
and the arguments the person's selection gives it; tables and models are named by the
:mod:`adrank.core.layout` constants.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from adrank.core import layout
from adrank.core.errors import InputError
from adrank.orchestration import bodies, headlines
from adrank.orchestration.bodies import TaskBody
from adrank.orchestration.headlines import Headline
from adrank.orchestration.selection import Selection, no_selection_args

CPU = "cpu"  # a Spark task: the CPU job cluster
GPU = "gpu"  # training and embedding: the GPU job cluster


@dataclass(frozen=True)
class Task:
    """One task: ``jobs/<job>.py <args>``, run after every task in ``depends_on``.

    ``shaped_by`` names the config sections whose values change what the task writes: a
    change there makes its outputs stale. ``reads`` and ``writes`` name the resources the
    task reads and writes: :data:`INPUTS` (the raw input files), ``table:<name>`` (a Delta
    table under ``storage.root``) or ``model:<stage>`` (a stage of the model registry). The
    pipeline skips a task whose inputs, config and outputs are those its last success saw.

    ``body`` does the task's work in the pipeline's session and returns the job's result
    (None: a task the pipeline cannot run in-process, only a scheduler through ``command``);
    ``headline`` turns that result into the few words of the task's "done" line;
    ``selection_args`` are the job arguments the person's :class:`Selection` adds (part of
    the config digest: other dates, other outputs).
    """

    name: str
    job: str
    args: tuple[str, ...]
    depends_on: tuple[str, ...]
    compute: str
    shaped_by: tuple[str, ...]
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    body: TaskBody | None = None
    headline: Headline = headlines.no_headline
    selection_args: Callable[[Selection], tuple[str, ...]] = no_selection_args

    @property
    def command(self) -> tuple[str, ...]:
        """The job and its arguments, as ``spark-submit.sh`` takes them."""
        return (self.job, *self.args)


INPUTS = "inputs"


def table(name: str) -> str:
    """The resource name of a Delta table."""
    return f"table:{name}"


def model(stage: str) -> str:
    """The resource name of a registry stage."""
    return f"model:{stage}"


def train_task(stage: str, depends_on: tuple[str, ...], reads: tuple[str, ...], writes: tuple[str, ...],
               headline: Headline) -> Task:
    """``train_<stage>``: the ``train`` job for one stage, on the GPU cluster."""
    return Task(f"train_{stage}", "train", ("--stage", stage), depends_on, GPU, ("features", "train"),
                reads=reads, writes=(model(stage), *writes), body=bodies.train_stage(stage), headline=headline)


GENERATE_DATA = Task("generate_data", "generate_data", (), (), CPU, ("sample", "inputs"), writes=(INPUTS,),
                     body=bodies.generate_data, headline=headlines.generated)

EXAMPLES, IMAGES, EMBEDDINGS = table(layout.TRAINING_EXAMPLES), table(layout.SKU_IMAGES), table(layout.SKU_EMBEDDINGS)

PIPELINE_TASKS: tuple[Task, ...] = (
    Task("build_tables", "build_tables", ("--new-dates",), (), CPU, ("inputs", "features"), reads=(INPUTS,),
         writes=(IMAGES, EXAMPLES, table(layout.QUARANTINE), table(layout.IMPRESSION_IDS)),
         body=bodies.build_tables, headline=headlines.built, selection_args=Selection.date_args),
    train_task(layout.PAIRWISE, ("build_tables",), reads=(EXAMPLES, IMAGES),
               writes=(table(layout.PAIRS_TRAIN), table(layout.PAIRS_HOLDOUT)), headline=headlines.pairwise_trained),
    Task("embed_catalog", "embed_catalog", (), ("train_pairwise",), GPU, ("features", "embed"),
         reads=(IMAGES, model(layout.PAIRWISE)), writes=(EMBEDDINGS,),
         body=bodies.embed_catalog, headline=headlines.embedded),
    train_task(layout.LR, ("build_tables",), reads=(EXAMPLES,), writes=(), headline=headlines.lr_trained),
    train_task(layout.JOINT, ("embed_catalog", "train_lr"),
               reads=(EXAMPLES, IMAGES, EMBEDDINGS, model(layout.PAIRWISE), model(layout.LR)),
               writes=(table(layout.JOINT_TRAIN), table(layout.JOINT_HOLDOUT)), headline=headlines.joint_trained),
    Task("recommend", "recommend", (), ("embed_catalog", "train_joint"), CPU, ("recommend",),
         reads=(EXAMPLES, IMAGES, EMBEDDINGS, model(layout.PAIRWISE)),
         writes=tuple(table(name) for name in layout.RECOMMENDATION_TABLES),
         body=bodies.recommend, headline=headlines.recommended),
)


def _with_dependency(task: Task, name: str) -> Task:
    """``task`` that also waits for ``name``."""
    return dataclasses.replace(task, depends_on=(*task.depends_on, name))


DEMO_TASKS: tuple[Task, ...] = (
    GENERATE_DATA,
    *(task if task.depends_on else _with_dependency(task, GENERATE_DATA.name) for task in PIPELINE_TASKS),
)


def task_names(tasks: tuple[Task, ...]) -> tuple[str, ...]:
    """The names, in run order."""
    return tuple(task.name for task in tasks)


def edges(tasks: tuple[Task, ...]) -> set[tuple[str, str]]:
    """``(upstream, downstream)`` pairs: what a scheduler's ``depends_on`` must equal."""
    return {(upstream, task.name) for task in tasks for upstream in task.depends_on}


def downstream_of(tasks: tuple[Task, ...], name: str) -> tuple[str, ...]:
    """``name`` and every task that depends on it, directly or not, in run order."""
    selected = {name}
    for task in tasks:
        if selected.intersection(task.depends_on):
            selected.add(task.name)
    return tuple(task.name for task in tasks if task.name in selected)


def forced_tasks(tasks: tuple[Task, ...], selection: Selection) -> tuple[str, ...] | None:
    """The tasks ``selection`` runs even when current (None: the whole graph, each only when stale)."""
    names = task_names(tasks)
    for name in (*selection.only, *([selection.from_task] if selection.from_task else [])):
        if name not in names:
            raise InputError(f"no task {name!r} in the pipeline; the tasks are: {', '.join(names)}")
    if selection.only:
        return tuple(name for name in names if name in selection.only)
    if selection.from_task:
        return downstream_of(tasks, selection.from_task)
    return None


def task_named(tasks: tuple[Task, ...], name: str) -> Task:
    """The task called ``name``; a one-line ``KeyError`` listing the names otherwise."""
    for task in tasks:
        if task.name == name:
            return task
    raise KeyError(f"no task {name!r}; the tasks are: {', '.join(task_names(tasks))}")

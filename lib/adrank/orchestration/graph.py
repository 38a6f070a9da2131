"""The pipeline's task graph as data: names, the job each task submits, its dependencies.

One definition feeds the ``pipeline`` job (:mod:`adrank.orchestration.pipeline` runs it), the scheduled
jobs under ``conf/`` and ``databricks.yml`` (a test checks they mirror it) and the README.
``demo`` is :data:`DEMO_TASKS`: the sample generator, then the pipeline.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

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
    """

    name: str
    job: str
    args: tuple[str, ...]
    depends_on: tuple[str, ...]
    compute: str
    shaped_by: tuple[str, ...]
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()

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


GENERATE_DATA = Task("generate_data", "generate_data", (), (), CPU, ("sample", "inputs"), writes=(INPUTS,))

PIPELINE_TASKS: tuple[Task, ...] = (
    Task("build_tables", "build_tables", (), (), CPU, ("inputs", "features"), reads=(INPUTS,),
         writes=(table("sku_images"), table("training_examples"), table("quarantine"))),
    Task("train_pairwise", "train", ("--stage", "pairwise"), ("build_tables",), GPU, ("features", "train"),
         reads=(table("training_examples"), table("sku_images")),
         writes=(model("pairwise"), table("stage1_pairs_train"), table("stage1_pairs_holdout"))),
    Task("embed_catalog", "embed_catalog", (), ("train_pairwise",), GPU, ("features", "embed"),
         reads=(table("sku_images"), model("pairwise")), writes=(table("sku_embeddings"),)),
    Task("train_lr", "train", ("--stage", "lr"), ("build_tables",), GPU, ("features", "train"),
         reads=(table("training_examples"),), writes=(model("lr"),)),
    Task("train_joint", "train", ("--stage", "joint"), ("embed_catalog", "train_lr"), GPU,
         ("features", "train"),
         reads=(table("training_examples"), table("sku_images"), table("sku_embeddings"), model("pairwise"),
                model("lr")),
         writes=(model("joint"), table("joint_examples_train"), table("joint_examples_holdout"))),
    Task("recommend", "recommend", (), ("embed_catalog", "train_joint"), CPU, ("recommend",),
         reads=(table("training_examples"), table("sku_images"), table("sku_embeddings"), model("pairwise")),
         writes=(table("similar_skus"), table("user_recommendations"), table("query_recommendations"))),
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


def task_named(tasks: tuple[Task, ...], name: str) -> Task:
    """The task called ``name``; a one-line ``KeyError`` listing the names otherwise."""
    for task in tasks:
        if task.name == name:
            return task
    raise KeyError(f"no task {name!r}; the tasks are: {', '.join(task_names(tasks))}")

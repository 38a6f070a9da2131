"""The embedding UDF: the registered stage-1 SavedModel mapped over SKU images on the executors.

:func:`with_embeddings` adds an ``embedding`` column (array<float>) to a DataFrame of
``sku_images`` rows with ``pyspark.ml.functions.predict_batch_udf``. Each Python worker
loads the SavedModel once per job (``predict_batch_udf`` caches the predict function in
the worker, which ``spark.python.worker.reuse=true`` keeps alive between tasks) and runs
its ``sku_embedding`` signature (uint8 ``[B, S, S, 3]`` -> ``{"embedding": [B, D]}``) on
batches of ``batch_size`` PNG/JPEG images decoded with PIL.

Resources, read from the task (:func:`task_resources`) before TensorFlow starts:

* GPU: when the task was given GPUs (``spark.executor.resource.gpu.amount``,
  ``spark.task.resource.gpu.amount``), ``CUDA_VISIBLE_DEVICES`` names the task's
  addresses, so TensorFlow sees exactly those (as ``GPU:0``...; memory growth on). A
  worker keeps the GPU of its first task: give each executor one GPU, or one task per
  GPU, as ``conf/cluster.yaml`` does. Without GPUs TensorFlow runs on the CPU as is.
* CPU threads: TensorFlow uses ``spark.task.cpus`` intra-op threads and one inter-op
  thread per worker, so ``N`` concurrent tasks on ``N`` cores do not oversubscribe.

:func:`load_embedder` is the same predict function outside Spark (the benchmark's
plain-Python baseline). TensorFlow is imported only inside it: importing this module
does not start TensorFlow.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np
from pyspark.sql import Column, DataFrame

from adrank.tables.store import decode_stored_images

SIGNATURE = "sku_embedding"
OUTPUT = "embedding"

CACHED_MODELS = 2

Embedder = Callable[[np.ndarray], np.ndarray]  # encoded images (object array) -> [B, D] embeddings
_LOADED: OrderedDict[str, Embedder] = OrderedDict()


def task_resources() -> tuple[int, list[str]]:
    """``(cpus, gpu addresses)`` of the running Spark task; ``(1, [])`` outside a task."""
    from pyspark import TaskContext

    context = TaskContext.get()
    if context is None:
        return 1, []
    gpu = context.resources().get("gpu")
    return max(int(context.cpus()), 1), list(gpu.addresses) if gpu is not None else []


def load_embedder(model_path: str, threads: int, gpu_addresses: Sequence[str] = ()) -> Embedder:
    """Load the SavedModel's ``sku_embedding`` signature; return ``images bytes -> float32 [B, D]``.

    Args:
        model_path: A registered model version's folder.
        threads: TensorFlow intra-op threads (inter-op: 1). Ignored if TensorFlow already
            runs in this process (its thread pools cannot change then).
        gpu_addresses: GPUs to make visible (CUDA ordinals); empty leaves the devices as
            they are (the CPU on a machine without GPUs).

    Returns:
        A function of a 1-d object array of encoded images.
    """
    if gpu_addresses:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_addresses)
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TensorFlow already started in this worker: keep its pools
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # already initialised
    model = tf.saved_model.load(model_path)
    signature = model.signatures[SIGNATURE]

    def embed(images: np.ndarray) -> np.ndarray:
        pixels = tf.constant(decode_stored_images(images))
        return signature(image=pixels)[OUTPUT].numpy().astype(np.float32, copy=False)

    embed.model = model  # type: ignore[attr-defined]  # keeps the loaded object (and its variables) alive
    return embed


def _task_embedder(model_path: str) -> Embedder:
    """``make_predict_fn`` of the UDF: runs in the Python worker, once per job and worker.

    A registered version's folder never changes, so a worker that outlives a job (a
    long-running session) reuses the loaded model for the next one (the last
    :data:`CACHED_MODELS` paths are kept).
    """
    embedder = _LOADED.pop(model_path, None)
    if embedder is None:
        cpus, gpus = task_resources()
        embedder = load_embedder(model_path, cpus, gpus)
    _LOADED[model_path] = embedder
    while len(_LOADED) > CACHED_MODELS:
        _LOADED.popitem(last=False)
    return embedder


def embedding_column(images: Column, model_path: str, batch_size: int) -> Column:
    """An array<float> column: the model's embedding of each encoded image in ``images``."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType

    udf = predict_batch_udf(functools.partial(_task_embedder, model_path),
                            return_type=ArrayType(FloatType()), batch_size=batch_size)
    return udf(images)


def with_embeddings(images_df: DataFrame, model_path: str, batch_size: int) -> DataFrame:
    """``images_df`` (with an ``image`` column) plus ``embedding``; drops ``image``."""
    return (images_df.withColumn(OUTPUT, embedding_column(images_df["image"], model_path, batch_size))
            .drop("image"))

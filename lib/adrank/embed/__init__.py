"""Stage 2: embed the catalog with the trained CNN, keep it fresh, export it for serving.

- :mod:`adrank.embed.udf`: the embedding UDF (``predict_batch_udf`` over the registered
  SavedModel's ``sku_embedding`` signature; GPU pinning and thread caps per task).
- :mod:`adrank.embed.incremental`: pure transforms that find the work (Change Data Feed,
  full, fallback diff) and shape the staged rows.
- :mod:`adrank.embed.store`: Delta I/O of ``sku_embeddings``, its run records, staging.
- :mod:`adrank.embed.run`: the ``embed_catalog`` run that ties them together.
- :mod:`adrank.embed.serving`: the serving snapshot format (versioned folders), load, patch merge.
- :mod:`adrank.embed.export`: a DataFrame streamed into a serving snapshot (the Spark side).

Nothing here imports TensorFlow at module import.
"""

"""Stage 3 (``joint``): the LR plus an interaction of context and ad embeddings.

- :mod:`~adrank.train.joint.driver`: the stage's driver function
  (:func:`~adrank.train.joint.driver.train_joint`): materialise, train each interaction
  module on the ranks, evaluate every model on the same held-out rows, register.
- :mod:`~adrank.train.joint.inputs`: the pinned ``sku_embeddings`` and the registered
  stage-1 model they came from.
- :mod:`~adrank.train.joint.examples`: the joint examples (x, y per row) as a Spark transform.
- :mod:`~adrank.train.joint.comparison`: the models side by side (the report's table).
- :mod:`~adrank.train.joint.oracle`: the ceiling, the sample generator's true click probability.

What runs on the ranks (the joint model, its dataset) is in :mod:`adrank.train.ranks`.
"""

"""The deterministic sample-data generator: catalog images, click log, LR features, snapshots.

``generate.generate_inputs(spark, cfg, inputs_root)`` writes every raw input of a synthetic
ad world with planted ground truth (clicks depend on the image category of the context
and the ad) plus deliberately broken records, and returns the manifest figures;
``run.generate_data`` is the job.
"""

"""adrank: ranking ads and products with CNN image embeddings on Spark, Delta and Horovod."""

__version__ = "0.1.0"

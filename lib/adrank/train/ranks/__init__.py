"""What runs inside a Horovod rank (TensorFlow, Horovod, Petastorm; never pyspark)."""

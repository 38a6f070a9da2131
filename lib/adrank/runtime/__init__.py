"""What runs a job: the one SparkSession, the command line, the console, run records, tracking, process control."""

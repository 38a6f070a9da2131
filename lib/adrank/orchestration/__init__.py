"""The pipeline: the task graph, its runner, and the freshness checks that skip and resume."""

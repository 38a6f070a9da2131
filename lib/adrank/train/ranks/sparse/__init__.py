"""The split gradient paths: plan (which path a table takes), collectives, the train step."""

"""The build_tables job: raw inputs -> the Delta feature tables, bad rows quarantined."""

"""The vocabulary every job shares: the typed config, the table layout, the errors a person reads."""

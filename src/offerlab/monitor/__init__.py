"""Production monitoring: the decision log, drift (PSI) and performance on matured outcomes."""

"""The study spec: its typed model, the checks on it, loading from YAML, search spaces, coverage."""

"""MLflow: the run schema's writer, the Tune callback, finding and removing a study."""

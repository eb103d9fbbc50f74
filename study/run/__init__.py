"""Running a study: local Ray, Tune wiring, the trial driver, pre-training, confirmation, submission."""

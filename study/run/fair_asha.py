"""ASHA that never stops the study's enqueued points (the paper's point and the coverage trials).

A pipeline study compares pre-training recipes by their coverage trials (study/spec/coverage.py): `coverage`
fine-tunes per recipe, enqueued first. If ASHA could stop them, a recipe's evidence would depend on how its
trials fared against the others at each rung, and recipes would be compared over different numbers of
complete fine-tunes. Here the first `protected` trials (Tune adds trials in the order the searcher suggests
them, and OptunaSearch suggests points_to_evaluate first) always run to the end; their results still feed the
rungs, so they set the bar the sampler's trials are cut against.
"""
from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, TrialScheduler


class CoverageASHA(ASHAScheduler):
    def __init__(self, protected: int, **kwargs):
        super().__init__(**kwargs)
        self.protected = protected
        self._protected_ids: set[str] = set()
        self._added = 0

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        if self._added < self.protected:
            self._protected_ids.add(trial.trial_id)
        self._added += 1

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if trial.trial_id in self._protected_ids and action == TrialScheduler.STOP:
            return TrialScheduler.CONTINUE  # a point of the study's design: complete, whatever the rung says
        return action

"""CoverageASHA: the study's enqueued points (paper + coverage) run to the end; later trials are cut as by
ASHA."""
from __future__ import annotations

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from thoraxmae.study.run.fair_asha import CoverageASHA


def _trials(n: int) -> list[Trial]:
    return [Trial("__fake", trial_id=f"t{i}", stub=True) for i in range(n)]


def test_enqueued_points_are_never_stopped_and_later_trials_are():
    sched = CoverageASHA(2, time_attr="epoch", metric="val/mauc", mode="max", max_t=8, grace_period=1,
                         reduction_factor=2)
    trials = _trials(4)
    for t in trials:
        sched.on_trial_add(None, t)
    # a strong trial sets the bar at rung 1; then each weak one reaches it
    assert sched.on_trial_result(None, trials[2], {"epoch": 1, "val/mauc": 0.9}) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, trials[3], {"epoch": 1, "val/mauc": 0.1}) == TrialScheduler.STOP
    for t in trials[:2]:  # coverage trials, as weak: they go on
        assert sched.on_trial_result(None, t, {"epoch": 1, "val/mauc": 0.1}) == TrialScheduler.CONTINUE
        assert sched.on_trial_result(None, t, {"epoch": 2, "val/mauc": 0.1}) == TrialScheduler.CONTINUE

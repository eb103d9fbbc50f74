"""The search of a study: Optuna's sampler inside Ray Tune's OptunaSearch, and the trial scheduler.

OptunaSearch gets the space as Optuna distributions, a seeded sampler (TPE or random) and the spec's
points_to_evaluate (the paper's recipe, coverage points); ASHA's clock is the reported `epoch` of the
scored phase (study/run/trial.py explains the pipeline's).
"""
from __future__ import annotations

import warnings

from thoraxmae.study import schema
from thoraxmae.study.spec.coverage import study_points
from thoraxmae.study.spec.model import StudySpec
from thoraxmae.study.spec.space import to_optuna_space


def make_sampler(spec: StudySpec):
    import optuna

    s = spec.search.sampler
    if s.type == "random":
        return optuna.samplers.RandomSampler(seed=s.seed)
    with warnings.catch_warnings():  # `multivariate`/`group` are "experimental" in Optuna 5, and what we want
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.n_startup_trials,
                                          multivariate=s.multivariate, group=s.multivariate)


def make_search(spec: StudySpec):
    from ray.tune.search.optuna import OptunaSearch

    if not spec.search.space:
        return None  # nothing to search: num_samples repeats of the fixed recipe
    return OptunaSearch(space=to_optuna_space(spec.search.space), metric=spec.metric, mode=spec.mode,
                        points_to_evaluate=study_points(spec) or None, sampler=make_sampler(spec))


def make_scheduler(spec: StudySpec):
    from ray.tune.schedulers import FIFOScheduler

    sched = spec.search.scheduler
    if sched.type == "none":
        return FIFOScheduler()
    from thoraxmae.study.run.fair_asha import CoverageASHA
    from thoraxmae.study.spec.coverage import covered_knobs

    # a study that covers recipes (or encoders): its enqueued points (paper + coverage) are never stopped, so
    # every recipe gets its complete fine-tunes before recipes are compared
    protected = len(study_points(spec)) if spec.search.coverage and covered_knobs(spec) else 0
    return CoverageASHA(protected, time_attr=schema.M_EPOCH, max_t=spec.max_t,
                        grace_period=sched.grace_period, reduction_factor=sched.reduction_factor)

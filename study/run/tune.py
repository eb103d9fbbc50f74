"""Running and resuming a study: one Tuner over the trial driver, with the study's MLflow callback.

Wiring (Ray 2.60, Train V2): a Tune function trainable (study.run.trial.trial_driver) per trial builds
the trainers' TorchTrainer, whose worker group gets its own placement group; the driver itself
asks Tune for no CPU (only `DRIVER_RESOURCES` memory) so drivers never hold the CPUs their workers need, and
`max_concurrent_trials` bounds how many worker groups compete. The search (sampler, scheduler) is
study.run.search; the experiment folder and restore, study.run.experiment; local Ray, study.run.ray_local.
"""
from __future__ import annotations

import logging
import os

import ray
import ray.tune
from ray.tune import Callback, Tuner

from thoraxmae.datasets.storage import Location
from thoraxmae.study.run.experiment import experiment_config, restore_tuner
from thoraxmae.study.run.search import make_scheduler, make_search
from thoraxmae.study.run.sweep import sweep_checkpoints
from thoraxmae.study.run.trial import trial_driver
from thoraxmae.study.spec.load import dump_spec
from thoraxmae.study.spec.model import StudySpec
from thoraxmae.study.tracking.callback import MlflowStudyCallback
from thoraxmae.study.tracking.lookup import SPEC_FILE, check_new_study, check_resumable
from thoraxmae.study.tracking.lookup import study_dir as _study_dir

log = logging.getLogger(__name__)
# The trial driver only waits on its Train controller: no CPU, a little memory (its Python process).
DRIVER_RESOURCES = {"cpu": 0, "memory": 256 * 1024**2}


def trainable(spec: StudySpec):
    return ray.tune.with_resources(ray.tune.with_parameters(trial_driver, spec=spec), DRIVER_RESOURCES)


def run_config(spec: StudySpec, callbacks: list[Callback]) -> ray.tune.RunConfig:
    return experiment_config(study_dir(spec), [MlflowStudyCallback(spec), *callbacks])


def study_dir(spec: StudySpec) -> Location:
    return _study_dir(spec.storage_path, spec.name)


def quiet_tune() -> None:
    """thoraxmae.cli.progress shows the study; Tune's own console output (a config box, TensorBoard hints) would
    interleave with it. RAY_AIR_NEW_OUTPUT=0 with verbose=0 silences it; set the variable to override. A failed
    trial is one progress line with its error (the whole trace is in MLflow's thoraxmae.error tag and Tune's
    error.txt), not a fifty-line traceback per trial: TUNE_PRINT_ALL_TRIAL_ERRORS=1 brings those back."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")


def build_tuner(spec: StudySpec, callbacks: list[Callback] | None = None) -> Tuner:
    quiet_tune()
    tune_config = ray.tune.TuneConfig(
        metric=spec.metric, mode=spec.mode, search_alg=make_search(spec), scheduler=make_scheduler(spec),
        num_samples=spec.search.num_samples, max_concurrent_trials=spec.resources.max_concurrent_trials)
    return Tuner(trainable(spec), tune_config=tune_config, run_config=run_config(spec, callbacks or []))


def run_study(spec: StudySpec, callbacks: list[Callback] | None = None) -> ray.tune.ResultGrid:
    """Run a new study to the end (Ray must be initialised). A failed trial does not stop it. The name
    must be free in the tracking store and in Tune's folder (lookup.check_new_study)."""
    check_new_study(spec)
    study_dir(spec).mkdir()
    (study_dir(spec) / SPEC_FILE).write_text(dump_spec(spec))
    coordinator = start_pretrain_coordinator(spec)
    grid = build_tuner(spec, callbacks).fit()
    del coordinator
    sweep_checkpoints(study_dir(spec))
    return grid


def resume_study(spec: StudySpec, callbacks: list[Callback] | None = None) -> ray.tune.ResultGrid:
    """Continue a study whose driver died: finished trials stay finished, unfinished and errored
    ones run again (their Train runs resume from their last checkpoint), the rest are sampled."""
    check_resumable(spec)
    quiet_tune()
    own = None if callbacks is None else [MlflowStudyCallback(spec), *callbacks]
    tuner = restore_tuner(study_dir(spec), trainable(spec), own)
    coordinator = start_pretrain_coordinator(spec)
    grid = tuner.fit()
    del coordinator
    sweep_checkpoints(study_dir(spec))
    return grid


def start_pretrain_coordinator(spec: StudySpec):
    """The actor through which a pipeline study's trials pre-train each recipe once (study/registry.py);
    it lives as long as this driver holds the handle."""
    if spec.stage != "pipeline" or not spec.search.reuse_pretraining:
        return None
    from thoraxmae.study.registry import Registry, start_coordinator

    Registry(spec.storage_path).entries()  # checks every registered checkpoint here: a damaged one is discarded
    return start_coordinator(spec.name)     # with its warning on this console, and pre-trained again

"""Running and resuming a study: one Tuner over the trial driver, with the study's MLflow callback.

Wiring (Ray 2.60, Train V2): a Tune function trainable (study.run.trial.trial_driver) per trial builds
the trainers' TorchTrainer, whose worker group gets its own placement group; the driver itself
asks Tune for no CPU (only `DRIVER_RESOURCES` memory) so drivers never hold the CPUs their workers need, and
`max_concurrent_trials` bounds how many worker groups compete. The search (sampler, scheduler) is
study.run.search; the experiment folder and restore, study.run.experiment; local Ray, study.run.ray_local.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pickle

import ray
import ray.tune
from ray.tune import Callback, Tuner
from ray.tune.error import TuneError

from thoraxmae.datasets.storage import Location
from thoraxmae.study.errors import SpecError
from thoraxmae.study.run.experiment import experiment_config, restore_tuner
from thoraxmae.study.run.search import make_scheduler, make_search
from thoraxmae.study.run.sweep import sweep_checkpoints
from thoraxmae.study.run.trial import trial_driver
from thoraxmae.study.run.tune_state import StateKeeper, check_state, way_back
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
    """thoraxmae.cli.progress shows the study; Tune's own console output (a config box, TensorBoard hints)
    would
    interleave with it. RAY_AIR_NEW_OUTPUT=0 with verbose=0 silences it; set the variable to override. A
    failed
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


def run_study(spec: StudySpec, callbacks: list[Callback] | None = None,
              keeper: StateKeeper | None = None) -> ray.tune.ResultGrid:
    """Run a new study to the end (Ray must be initialised). A failed trial does not stop it. The name
    must be free in the tracking store and in Tune's folder (lookup.check_new_study). `keeper` may keep
    copies of the state Tune writes from now on."""
    check_new_study(spec)
    if keeper is not None:
        keeper.arm()
    study_dir(spec).mkdir()
    (study_dir(spec) / SPEC_FILE).write_text(dump_spec(spec))
    coordinator = start_pretrain_coordinator(spec)
    grid = fit(build_tuner(spec, callbacks))
    del coordinator
    sweep_checkpoints(study_dir(spec))
    return grid


def resume_study(spec: StudySpec, callbacks: list[Callback] | None = None,
                 keeper: StateKeeper | None = None) -> ray.tune.ResultGrid:
    """Continue a study whose driver died: finished trials stay finished, unfinished and errored
    ones run again (their Train runs resume from their last checkpoint), the rest are sampled. Never a
    restart: Tune's state is checked first (study.run.tune_state), and RestoreGuard stops the study before
    any trial when Tune fails to restore it anyway; `keeper` is armed once Tune has restored it."""
    check_resumable(spec)
    expected = check_state(spec).trials()
    quiet_tune()
    guard = RestoreGuard(spec, expected, keeper)
    tuner = restore_tuner(study_dir(spec), trainable(spec),
                          [guard, MlflowStudyCallback(spec), *(callbacks or [])])
    coordinator = start_pretrain_coordinator(spec)
    with guard.watching():
        grid = fit(tuner)
    del coordinator
    sweep_checkpoints(study_dir(spec))
    return grid


def fit(tuner: Tuner) -> ray.tune.ResultGrid:
    """tuner.fit(), and its results even when a trial's error file is unreadable: a full disk leaves an empty
    error.pkl, and Tune's ResultGrid raises EOFError reading it after the study has ended. Such a trial's
    error is then the text of its error.txt (or empty): it still counts as failed."""
    try:
        return tuner.fit()
    except (EOFError, OSError, ValueError, pickle.UnpicklingError) as exc:
        analysis = getattr(getattr(tuner, "_local_tuner", None), "_experiment_analysis", None)
        if analysis is None:  # the study itself failed, not the reading of its results
            raise
        unreadable = f"{type(exc).__name__}: {exc}"
    damaged = set()
    for trial in analysis.trials:
        try:
            trial.get_pickled_error()
        except Exception:  # noqa: BLE001 (a damaged pickle fails in many ways; the trial still counts as failed)
            trial.run_metadata.pickled_error_filename = None
            damaged.add(trial.path)
    grid = ray.tune.ResultGrid(analysis)
    for result in grid:
        if result.path in damaged and not str(result.error or "").strip():
            result.error = TuneError(f"trial failed; its error file could not be read ({unreadable}: a full "
                                     "disk?)")
    log.info("a trial's error file could not be read (%s)", unreadable)
    return grid


class _RestoreWatch(logging.Filter):
    """Catches Tune's "Failed to restore the run state" (and the "Restarting experiment" after it) on the
    Tune controller's logger: the error goes into RestoreGuard's message instead of a traceback."""

    LOGGER = "ray.tune.execution.tune_controller"

    def __init__(self) -> None:
        super().__init__()
        self.failure: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith("Failed to restore the run state"):
            exc = record.exc_info[1] if record.exc_info else None
            self.failure = f"{type(exc).__name__}: {exc}" if exc else text
            return False
        return not (self.failure and text.startswith("Restarting experiment"))


class RestoreGuard(Callback):
    """First of a resumed study's callbacks: when Tune restored fewer trials than its state holds (it could
    not
    read the state, and would start the study over beside the old trials), stop the study before any trial
    runs and before the MLflow callback touches a run, with one line that says how to go on."""

    def __init__(self, spec: StudySpec, expected: int, keeper: StateKeeper | None = None):
        self.spec, self.expected, self.keeper = spec, expected, keeper
        self.watch = _RestoreWatch()
        self._checked = False

    @contextlib.contextmanager
    def watching(self):
        logger = logging.getLogger(_RestoreWatch.LOGGER)
        logger.addFilter(self.watch)
        try:
            yield
        finally:
            logger.removeFilter(self.watch)

    def _stop(self, what: str) -> None:
        raise SpecError(f"study `{self.spec.name}`: Tune could not restore its state ({what}) and would "
                        f"start the study over; stopped before any trial ran. {way_back(self.spec)}")

    def setup(self, **info) -> None:
        if self.watch.failure:
            self._stop(self.watch.failure)

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        if not self._checked:
            self._checked = True
            if len(trials) < self.expected:
                self._stop(f"{len(trials)} of the {self.expected} trials in its state file restored")
            if self.keeper is not None:
                self.keeper.arm()  # Tune restored the state it reads: copies of it are good


def start_pretrain_coordinator(spec: StudySpec):
    """The actor through which a pipeline study's trials pre-train each recipe once (study/registry.py);
    it lives as long as this driver holds the handle."""
    if spec.stage != "pipeline" or not spec.search.reuse_pretraining:
        return None
    from thoraxmae.study.registry import Registry, start_coordinator

    # checks every registered checkpoint here: a damaged one is discarded
    Registry(spec.storage_path).entries()
    return start_coordinator(spec.name)     # with its warning on this console, and pre-trained again

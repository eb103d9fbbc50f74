"""Tuner + OptunaSearch + ASHA for a study spec, and restoring a study whose driver died.

Wiring (Ray 2.60, Train V2): a Tune function trainable (study.trial.trial_driver) per trial builds
the trainers' TorchTrainer, whose worker group gets its own placement group; the driver itself
asks Tune for no CPU (only `DRIVER_RESOURCES` memory) so drivers never hold the CPUs their workers need, and
`max_concurrent_trials` bounds how many worker groups compete. ASHA's clock is the reported `epoch`
of the scored phase (see study.trial for the pipeline); OptunaSearch gets the space as Optuna
distributions, a seeded TPE sampler and the spec's points_to_evaluate.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import time
import warnings
from pathlib import Path

import ray
import ray.tune
from ray.tune import Callback, Tuner

from thoraxmae.datasets.storage import Location, ray_storage
from thoraxmae.study import schema
from thoraxmae.study.run.trial import trial_driver
from thoraxmae.study.spec.model import StudySpec, dump_spec
from thoraxmae.study.spec.space import to_optuna_space
from thoraxmae.study.tracking.callback import MlflowStudyCallback
from thoraxmae.study.tracking.lookup import SPEC_FILE, check_new_study, check_resumable
from thoraxmae.study.tracking.lookup import study_dir as _study_dir

log = logging.getLogger(__name__)
# The trial driver only waits on its Train controller: no CPU, a little memory (its Python process).
DRIVER_RESOURCES = {"cpu": 0, "memory": 256 * 1024**2}
LOOPBACK = "127.0.0.1"
CHECKPOINT_SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train's record of a run's registered checkpoints
CHECKPOINT_DIR = re.compile(r"checkpoint_[0-9][0-9_.-]*[0-9]")  # Ray Train's checkpoint folder names
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node IP is 127.0.0.1 (see init_ray)
# Tune's driver writes the study's state (trial statuses, the searcher) to a local staging folder and copies it
# to storage at most every `sync_period` seconds (Ray's default 300): a driver killed in between leaves the state
# of up to that long ago, and `study resume` re-runs the trials started since (their Train runs resume).
SYNC_PERIOD_S = 30


def init_ray(**local_options) -> float:
    """Join RAY_ADDRESS when set (or inside a Ray job), else start a local Ray that listens on 127.0.0.1
    only, with its dashboard (which also frees the placement groups of trials that ASHA stops). Returns seconds.

    Loopback only: Ray binds its GCS, raylet, worker and agent ports to the node's IP address, which
    Ray takes from the network unless clusters are off for the process (as Ray does on macOS and
    Windows); `_local_node_ip` turns them off while Ray starts, so the node's IP is 127.0.0.1 and
    nothing listens on another interface (tests/integration/test_security.py checks every socket).
    A local Ray is started on a chosen GCS port with RAY_ADDRESS naming it in the environment its
    processes inherit: Train's placement-group cleaner finds "its" cluster through RAY_ADDRESS (or
    the last `ray start` on the machine), and on a machine running several Rays it would otherwise
    ask the wrong one, leak the group of every stopped trial and hang the study.
    `local_options` go to ray.init (e.g. num_cpus=2 in tests)."""
    t0 = time.monotonic()
    if ray.is_initialized():
        return 0.0
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False)
        return time.monotonic() - t0
    gcs_port, dashboard_port = free_ports(2)
    own = {"RAY_GCS_SERVER_PORT": str(gcs_port), "RAY_ADDRESS": f"{LOOPBACK}:{gcs_port}", LOCAL_ONLY_ENV: "0"}
    saved = {k: os.environ.get(k) for k in own}
    os.environ.update(own)
    try:
        options = {"include_dashboard": True, "dashboard_host": LOOPBACK, "dashboard_port": dashboard_port,
                   "log_to_driver": False, **local_options}
        with _local_node_ip():
            ray.init(address="local", **options)  # "local": never a cluster some `ray start` left here
    finally:
        restore_env(saved)
    return time.monotonic() - t0


def restore_env(saved: dict[str, str | None]) -> None:
    """Put environment variables back as `saved` ({name: value, or None when it was unset})."""
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@contextlib.contextmanager
def _local_node_ip():
    """Ray reads LOCAL_ONLY_ENV when it is imported (ray._private.ray_constants.ENABLE_RAY_CLUSTER):
    this process imported Ray already, so the flag is set for the start too; processes Ray starts
    read the environment variable."""
    from ray._private import ray_constants

    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if saved is not None:
            ray_constants.ENABLE_RAY_CLUSTER = saved


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    return ports


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
                        points_to_evaluate=spec.points() or None, sampler=make_sampler(spec))


def make_scheduler(spec: StudySpec):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    sched = spec.search.scheduler
    if sched.type == "none":
        return FIFOScheduler()
    return ASHAScheduler(time_attr=schema.M_EPOCH, max_t=spec.max_t, grace_period=sched.grace_period,
                         reduction_factor=sched.reduction_factor)


def trainable(spec: StudySpec):
    return ray.tune.with_resources(ray.tune.with_parameters(trial_driver, spec=spec), DRIVER_RESOURCES)


def run_config(spec: StudySpec, callbacks: list[Callback]) -> ray.tune.RunConfig:
    return experiment_config(study_dir(spec), [MlflowStudyCallback(spec), *callbacks])


def experiment_config(folder: Location, callbacks: list[Callback]) -> ray.tune.RunConfig:
    """The RunConfig of a Tune experiment kept in `folder` (a study, or its confirmation), local or on object
    storage: a failed trial does not stop it, its state is synced every SYNC_PERIOD_S, Tune's console is quiet."""
    return ray.tune.RunConfig(name=folder.name, **ray_storage(folder.parent), callbacks=callbacks,
                              sync_config=ray.tune.SyncConfig(sync_period=SYNC_PERIOD_S),
                              failure_config=ray.tune.FailureConfig(max_failures=0), verbose=0)


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


def can_restore(folder: Location) -> bool:
    """Does `folder` (local or on object storage) hold the state of a Tune experiment?"""
    where = ray_storage(folder)
    return Tuner.can_restore(where["storage_path"], storage_filesystem=where.get("storage_filesystem"))


def restore_tuner(folder: Location, trainable_, callbacks: list[Callback] | None) -> Tuner:
    """The Tune experiment in `folder` (local or on object storage), unfinished and errored trials to run
    again. Tune restores the callbacks pickled when it started; `callbacks` (this process's own, e.g. a
    fresh progress display) replace them through the one place Tuner keeps its RunConfig."""
    where = ray_storage(folder)  # {"storage_path": the folder[, "storage_filesystem": the object store]}
    tuner = Tuner.restore(where["storage_path"], trainable=trainable_, resume_unfinished=True, resume_errored=True,
                          storage_filesystem=where.get("storage_filesystem"))
    local = getattr(tuner, "_local_tuner", None)
    if local is not None and callbacks is not None:
        local.get_run_config().callbacks = callbacks
    return tuner


def start_pretrain_coordinator(spec: StudySpec):
    """The actor through which a pipeline study's trials pre-train each recipe once (study/registry.py);
    it lives as long as this driver holds the handle."""
    if spec.stage != "pipeline" or not spec.search.reuse_pretraining:
        return None
    from thoraxmae.study.registry import Registry, start_coordinator

    Registry(spec.storage_path).entries()  # checks every registered checkpoint here: a damaged one is discarded
    return start_coordinator(spec.name)     # with its warning on this console, and pre-trained again


def sweep_checkpoints(root: Location | Path | str) -> list[Location]:
    """Delete the checkpoint folders of Train runs under `root` that no run record names; returns them.

    Ray Train deletes the checkpoints it registered beyond `num_to_keep`, but a checkpoint uploaded by
    an attempt that failed before it was registered stays in storage. A run folder's records (Train's
    checkpoint_manager_snapshot.json, study.trial's final marker: every *.json beside the checkpoints)
    name the checkpoints that count; the others go. A run is only swept when one of the checkpoints
    its records name is there, so a naming Ray changes never deletes a registered checkpoint."""
    removed = []
    root = Location.of(root)
    for snapshot in root.walk_files(CHECKPOINT_SNAPSHOT):
        run = snapshot.parent
        try:
            children = run.iterdir()
            named = {m for f in children if f.name.endswith(".json") for m in CHECKPOINT_DIR.findall(f.read_text())}
        except OSError as exc:
            log.warning("%s: not swept (%s)", run, exc)
            continue
        folders = [d for d in children if d.name.startswith("checkpoint_") and d.is_dir()]
        if not named & {d.name for d in folders}:
            continue
        for folder in folders:
            if folder.name not in named:
                try:
                    folder.rmtree()
                except OSError as exc:
                    log.warning("%s: not removed (%s)", folder, exc)
                    continue
                removed.append(folder)
    if removed:
        log.info("removed %d unregistered checkpoint folder(s) under %s", len(removed), root)
    return removed

"""A Tune experiment's folder on storage: its RunConfig, whether it can be restored, and restoring it.

Tune's driver writes the study's state (trial statuses, the searcher) to a local staging folder and copies
it to storage at most every `SYNC_PERIOD_S` seconds (Ray's default 300): a driver killed in between leaves
the state of up to that long ago, and `study resume` re-runs the trials started since (their Train runs
resume). Serves a study and its confirmation alike.
"""
from __future__ import annotations

import ray.tune
from ray.tune import Callback, Tuner

from thoraxmae.datasets.storage import Location, ray_storage

SYNC_PERIOD_S = 30


def experiment_config(folder: Location, callbacks: list[Callback]) -> ray.tune.RunConfig:
    """The RunConfig of a Tune experiment kept in `folder` (a study, or its confirmation), local or on object
    storage: a failed trial does not stop it, its state is synced every SYNC_PERIOD_S, Tune's console is
    quiet."""
    return ray.tune.RunConfig(name=folder.name, **ray_storage(folder.parent), callbacks=callbacks,
                              sync_config=ray.tune.SyncConfig(sync_period=SYNC_PERIOD_S),
                              failure_config=ray.tune.FailureConfig(max_failures=0), verbose=0)


def can_restore(folder: Location) -> bool:
    """Does `folder` (local or on object storage) hold the state of a Tune experiment?"""
    where = ray_storage(folder)
    return Tuner.can_restore(where["storage_path"], storage_filesystem=where.get("storage_filesystem"))


def restore_tuner(folder: Location, trainable_, callbacks: list[Callback] | None) -> Tuner:
    """The Tune experiment in `folder` (local or on object storage), unfinished and errored trials to run
    again. Tune restores the callbacks pickled when it started; `callbacks` (this process's own, e.g. a
    fresh progress display) replace them through the one place Tuner keeps its RunConfig."""
    where = ray_storage(folder)  # {"storage_path": the folder[, "storage_filesystem": the object store]}
    tuner = Tuner.restore(where["storage_path"], trainable=trainable_, resume_unfinished=True,
                          resume_errored=True,
                          storage_filesystem=where.get("storage_filesystem"))
    local = getattr(tuner, "_local_tuner", None)
    if local is not None and callbacks is not None:
        local.get_run_config().callbacks = callbacks
    return tuner

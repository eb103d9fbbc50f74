"""The pre-training half of a pipeline trial, shared through the registry (study/registry.py).

`pretrain_once` returns the finished pre-training a trial fine-tunes from: the registered one when its
key is there, else the one this trial runs (holding the key's lease), else the one another trial of
the study is running (this trial waits for its entry). The Train run of a key lives in the registry,
named by the key, so a pre-training killed half-way resumes from its checkpoint whichever trial
picks it up next.

What Tune sees: the trial that runs the pre-training forwards its epochs as before (`pretrain/...`,
tagged with `pretrain/key`); a trial that reuses one reports a single `pretrain/reused` result with
the key, so the study's MLflow callback links the trial to the key's pre-training run.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from thoraxmae.datasets.storage import Location
from thoraxmae.study.registry import (
    RUN_NAME,
    Lease,
    Registry,
    coordinator_name,
    key_payload,
    pretrain_key,
)
from thoraxmae.study.spec.model import StudySpec
from thoraxmae.trainers.reporting import CHECKPOINT_FILE

log = logging.getLogger(__name__)
POLL_S = 2.0


def trial_key(spec: StudySpec, cfg: Any) -> tuple[str, dict[str, Any]]:
    """The registry key of a trial's pre-training config (after its knobs), and what it covers."""
    payload = key_payload(spec.model, spec.data_for("pretrain"), cfg, spec.resources.workers_per_trial)
    return pretrain_key(payload), payload


def pretrain_once(spec: StudySpec, cfg: Any, trial_id: str,
                  run_phase: Callable[[str, Location, str], dict[str, Any]]) -> tuple[dict[str, Any], str, bool]:
    """The finished pre-training for this trial's recipe: (final marker {"metrics", "checkpoint", "history",
    "trial_id" (who ran it)}, key, reused). The marker's "checkpoint" is the checkpoint folder as a string: a
    local path or a URI.

    run_phase(name, runs_dir, key) runs (or resumes) the pre-training Train run in the registry folder
    runs_dir and returns its final marker."""
    import ray

    registry = Registry(spec.storage_path)
    key, payload = trial_key(spec, cfg)
    coordinator = ray.get_actor(coordinator_name(spec.name))
    waited = False
    while True:
        entry = registry.lookup(key)
        if entry is not None:
            log.info("trial %s: pre-training %s reused (%s)", trial_id, key, entry.checkpoint)
            return {"metrics": entry.metrics, "checkpoint": Location.of(entry.checkpoint).parent.uri,
                    "history": entry.history, "trial_id": entry.source.get("trial_id")}, key, True
        holder = ray.get(coordinator.claim.remote(key, trial_id))
        if holder == trial_id:
            break
        if not waited:
            log.info("trial %s: waiting for trial %s, which pre-trains %s", trial_id, holder, key)
            waited = True
        time.sleep(POLL_S)
    registry.prepare(key, payload)
    with Lease(coordinator, key, trial_id):
        done = run_phase(RUN_NAME, registry.folder(key), key)
        if not done.get("checkpoint"):
            raise RuntimeError(f"pre-training {key} reported no checkpoint; nothing to fine-tune")
        registry.record(key, str(Location.of(done["checkpoint"]) / CHECKPOINT_FILE), done["metrics"],
                        {"study": spec.name, "trial_id": trial_id}, history=done.get("history"))
    return {**done, "trial_id": trial_id}, key, False

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
    PretrainEntry,
    Registry,
    coordinator_name,
    entry_id,
    key_payload,
    pretrain_key,
)
from thoraxmae.study.spec.model import StudySpec
from thoraxmae.trainers.reporting import CHECKPOINT_FILE

log = logging.getLogger(__name__)
POLL_S = 2.0
EPOCH = "pretrain/epoch"  # a forwarded pre-training result's epoch (study.tracking.results.phase_metrics)


def trial_key(spec: StudySpec, cfg: Any) -> tuple[str, dict[str, Any]]:
    """The registry key of a trial's pre-training config (after its knobs), and what it covers."""
    payload = key_payload(spec.model, spec.data_for("pretrain"), cfg, spec.resources.workers_per_trial)
    return pretrain_key(payload), payload


def continuation_source(spec: StudySpec, registry: Registry, cfg: Any) -> tuple[int, PretrainEntry] | None:
    """The registered checkpoint this pre-training continues, as (its epochs, its entry), or None (from
    scratch).
    constant: the same key's entry with the most epochs below `epochs`; wsd: the constant run of the same
    recipe at or before the decay's start (a branch). No epoch is run twice."""
    if cfg.schedule == "cosine":
        return None
    constant = cfg.model_copy(update={"schedule": "constant", "decay_epochs": None, "continue_from": None})
    last = cfg.epochs - 1 if cfg.schedule == "constant" else cfg.epochs - cfg.decay_epochs
    return registry.latest(trial_key(spec, constant)[0], last)


def pretrain_once(spec: StudySpec, cfg: Any, trial_id: str,
                  run_phase: Callable[[str, Location, str, Any],
                                      dict[str, Any]]) -> tuple[dict[str, Any], str, bool]:
    """The finished pre-training for this trial's recipe: (final marker {"metrics", "checkpoint", "history",
    "trial_id" (who ran it)}, entry id, reused). The marker's "checkpoint" is the checkpoint folder as a
    string: a
    local path or a URI. The entry id is the key, and for a constant schedule `<key>-e<epochs>`
    (study.registry.entry_id); a missing one continues the longest shorter entry of its key
    (continuation_source).

    run_phase(name, runs_dir, entry id, cfg) runs (or resumes) the pre-training Train run of `cfg` in the
    registry folder runs_dir and returns its final marker."""
    import ray

    registry = Registry(spec.storage_path)
    key, payload = trial_key(spec, cfg)
    eid = entry_id(key, cfg)
    coordinator = ray.get_actor(coordinator_name(spec.name))
    me = {"study": spec.name, "trial_id": trial_id}
    waited = False
    while True:
        entry = registry.lookup(eid)
        if entry is not None:
            log.info("trial %s: pre-training %s reused (%s)", trial_id, eid, entry.checkpoint)
            return {"metrics": entry.metrics, "checkpoint": Location.of(entry.checkpoint).parent.uri,
                    "history": entry.history, "trial_id": entry.source.get("trial_id")}, eid, True
        holder = ray.get(coordinator.claim.remote(eid, trial_id))
        if holder == trial_id:  # granted in this study; now across studies on this storage
            other = registry.claim(eid, me)
            if other is None:
                break
            holder = f"{other.get('trial_id')} of study {other.get('study')}"
        if not waited:
            log.info("trial %s: waiting for trial %s, which pre-trains %s", trial_id, holder, eid)
            waited = True
        time.sleep(POLL_S)
    registry.prepare(eid, {**payload, "epochs": cfg.epochs})
    source = continuation_source(spec, registry, cfg)
    earlier: list[dict[str, Any]] = []
    if source is not None:
        log.info("trial %s: pre-training %s continues %s from epoch "
                 "%d", trial_id, eid, source[1].key, source[0])
        cfg = cfg.model_copy(update={"continue_from": source[1].checkpoint})
        earlier = list(source[1].history)
    with Lease(coordinator, eid, trial_id, registry=registry, holder=me):
        done = run_phase(RUN_NAME, registry.folder(eid), eid, cfg)
        if not done.get("checkpoint"):
            raise RuntimeError(f"pre-training {eid} reported no checkpoint; nothing to fine-tune")
        registry.record(eid, str(Location.of(done["checkpoint"]) / CHECKPOINT_FILE), done["metrics"],
                        {"study": spec.name, "trial_id": trial_id,
                         "continued_from": source[1].key if source else None},
                        history=earlier + [h for h in done.get("history") or []  # a restarted segment resends
                                           if h.get(EPOCH, 0) > (source[0] if source else 0)])
    return {**done, "trial_id": trial_id}, eid, False

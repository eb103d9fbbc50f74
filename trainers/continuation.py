"""Continuing a horizon-free pre-training from the checkpoint of an earlier, shorter run of the same recipe.

Under `pretrain.schedule: constant` the LR at epoch e does not depend on `pretrain.epochs`, and the loop
reseeds every epoch from (seed, rank, epoch) (trainers.pretrain), so a run continued from its epoch-e
checkpoint to e2 (weights, AdamW state, cost and lineage history restored) gives the same weights and the
same `pretrain/loss` history as one run from 0 to e2 (bit-identical on CPU). A `wsd` run is a branch: it
continues a constant checkpoint taken at or before `epochs - decay_epochs`. A cosine run is never continued:
its LR at every epoch depends on its length (docs/paper.md, "Anytime schedules").
"""
from __future__ import annotations

from typing import Any

from thoraxmae.trainers import reporting as R
from thoraxmae.trainers.checkpoint_files import read_checkpoint
from thoraxmae.trainers.config import ModelConfig, PretrainConfig
from thoraxmae.trainers.errors import CheckpointError

PRETRAIN_STATE = "pretrain"  # in CHECKPOINT_FILE: the PretrainConfig of the run that wrote it (JSON)
# What may differ between the run that wrote the checkpoint and the run that continues it: its length and
# where the decay starts, and bookkeeping. Everything else (LR, warm-up, batch, knobs, seed, step cap) must
# match.
LENGTH_FIELDS = frozenset({"epochs", "schedule", "decay_epochs", "continue_from", "checkpoint_every"})


def pretrain_state(cfg: PretrainConfig) -> dict[str, Any]:
    """What a pre-training checkpoint records about its run (checked by `continuation_files`)."""
    return cfg.model_dump(mode="json", exclude={"continue_from"})


def recipe_mismatch(saved: dict[str, Any], cfg: PretrainConfig) -> dict[str, tuple[Any, Any]]:
    """{field: (checkpoint's value, this run's)} for every field outside LENGTH_FIELDS that differs."""
    mine = cfg.model_dump(mode="json")
    return {k: (saved.get(k), v) for k, v in mine.items() if k not in LENGTH_FIELDS and saved.get(k) != v}


def continuation_files(cfg: PretrainConfig, model: ModelConfig) -> dict[str, Any]:
    """{CHECKPOINT_FILE: state} of `cfg.continue_from`, as `trainers.runtime.restore_files` returns it, after
    checking that this run may continue it (CheckpointError naming the file and the reason otherwise)."""
    path = cfg.continue_from
    state = read_checkpoint(path, "thoraxmae")
    saved = state.get(PRETRAIN_STATE)
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: not a pre-training checkpoint with its schedule recorded; cannot "
                              "continue it")
    epoch = int(state.get("epoch", 0))
    if saved.get("schedule") != "constant":
        raise CheckpointError(f"{path}: written by a {saved.get('schedule')!r} schedule; only a "
                              "constant-schedule checkpoint is horizon-free and can be continued")
    last_constant = cfg.epochs - (cfg.decay_epochs or 0) if cfg.schedule == "wsd" else cfg.epochs
    if not 0 < epoch <= last_constant or epoch >= cfg.epochs:
        raise CheckpointError(f"{path}: its epoch {epoch} cannot be continued to "
                              f"pretrain.epochs={cfg.epochs} (schedule {cfg.schedule}: needs 0 < epoch <= "
                              f"{min(last_constant, cfg.epochs - 1)})")
    diff = recipe_mismatch(saved, cfg)
    if diff:
        shown = ", ".join(f"pretrain.{k}: {a!r} there, {b!r} here" for k, (a, b) in sorted(diff.items()))
        raise CheckpointError(f"{path}: another recipe ({shown}); cannot continue it")
    if state.get("model_config") != model.model_dump(mode="json"):
        raise CheckpointError(f"{path}: written for another model ({state.get('model_config')}); cannot "
                              "continue it")
    return {R.CHECKPOINT_FILE: state}

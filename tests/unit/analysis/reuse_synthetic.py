"""Pipeline studies with pre-training reuse, and encoder studies, written into a real MLflow as the run
schema has them (docs/mlflow-schema.md "Pre-training runs"): the numbers are planted, so the tests can
compute every expected value by hand.

A pre-training run is a child of the parent run of the study that ran it (role `pretrain`, its key),
with `pretrain/loss` and `cost/cpu_hours` per epoch; each trial links the key and that run's id, and
logs `val/mauc` per fine-tuning epoch (best at epoch 2) and its fine-tuning hours only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from thoraxmae.study import schema

MASK, CROP, INIT = "pretrain.mask_ratio", "pretrain.crop_min", "finetune.init"
PIPELINE_SPACE = {MASK: {"type": "categorical", "choices": [0.75, 0.9]},
                  CROP: {"type": "categorical", "choices": [0.2, 0.5]},
                  "finetune.layer_decay": {"type": "float", "low": 0.4, "high": 1.0}}
CURVE = (-0.02, 0.0, -0.005)  # val/mauc per epoch relative to the trial's score: best at epoch 2
FINETUNE_HOURS = 0.01


@dataclass
class Pretraining:
    key: str
    mask: float
    crop: float
    loss: float  # final pretrain/loss
    hours: float  # final cost/cpu_hours


@dataclass
class Trial:
    trial_id: str
    key: str | None  # its pre-training's key (None: it pre-trained itself, no reuse)
    score: float  # val/mauc at its best epoch
    status: str = schema.STATUS_COMPLETED
    params: dict[str, Any] = field(default_factory=dict)  # extra params (e.g. finetune.init)
    recipe: Pretraining | None = None  # without a key: the pre-training it ran itself


@dataclass
class Written:
    name: str
    experiment_id: str
    parent_run_id: str
    pretrain_runs: dict[str, str]  # key -> run id (its own)
    trial_runs: dict[str, str]  # trial id -> run id


def spec(name: str, stage: str = "pipeline", space: dict | None = None) -> dict[str, Any]:
    return {"name": name, "stage": stage, "data": {"store": "/data/store"},
            "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8, "depth": 2},
            "pretrain": {"epochs": 3, "mask_ratio": 0.9, "crop_min": 0.5}, "finetune": {"epochs": 3},
            "search": {"metric": schema.M_VAL_MAUC, "mode": "max", "num_samples": 10,
                       "space": PIPELINE_SPACE if space is None else space},
            "tracking": {"experiment": name}}


def write(uri: str, root: Path, name: str, own: list[Pretraining], trials: list[Trial],
          reused: dict[str, tuple[Pretraining, str]] | None = None,
          parent_metrics: dict[str, float] | None = None,
          study_spec: dict | None = None) -> Written:
    """Study `name` in its own experiment: its pre-training runs `own`, its trials (linking `own` keys,
    or `reused` keys: key -> (recipe, run id of another study's run)), its parent's metrics."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    study_spec = study_spec or spec(name)
    exp = client.create_experiment(name, artifact_location=(root / "artifacts" / name).resolve().as_uri())
    parent = client.create_run(exp, run_name=name, tags={schema.TAG_ROLE: schema.ROLE_STUDY,
                                                         schema.TAG_STUDY: name,
                                                         schema.TAG_STAGE: study_spec["stage"]}).info.run_id
    client.log_text(parent, yaml.safe_dump(study_spec, sort_keys=False), schema.ARTIFACT_SPEC)
    t0 = int(time.time() * 1000) - 3_600_000
    runs = {p.key: _pretrain_run(client, exp, parent, name, p, t0) for p in own}
    recipes = {p.key: p for p in own} | {k: r for k, (r, _) in (reused or {}).items()}
    links = runs | {k: run for k, (_, run) in (reused or {}).items()}
    first_user: set[str] = set()
    trial_runs = {}
    for i, t in enumerate(trials):
        reuses = t.key is not None and (t.key not in runs or t.key in first_user)
        if t.key is not None:
            first_user.add(t.key)
        trial_runs[t.trial_id] = _trial_run(client, exp, parent, name, t, t.recipe or recipes.get(t.key),
                                            links.get(t.key),
                                            reuses, t0 + 60_000 * (i + 1), study_spec["stage"])
    for metric, value in (parent_metrics or {}).items():
        client.log_metric(parent, metric, value)
    client.set_terminated(parent, "FINISHED")
    return Written(name, exp, parent, runs, trial_runs)


def _pretrain_run(client, exp: str, parent: str, name: str, p: Pretraining, start_ms: int) -> str:
    from mlflow.entities import Metric, Param

    tags = {schema.TAG_PARENT: parent, schema.TAG_ROLE: schema.ROLE_PRETRAIN, schema.TAG_STUDY: name,
            schema.TAG_PRETRAIN_KEY: p.key, schema.TAG_STATUS: schema.STATUS_COMPLETED}
    run = client.create_run(exp, start_time=start_ms, tags=tags, run_name=f"pretrain-{p.key}").info.run_id
    params = {MASK: str(p.mask), CROP: str(p.crop), "pretrain.epochs": "3"}
    metrics = []
    for epoch in (1, 2, 3):
        metrics += [Metric(schema.M_PRETRAIN_LOSS, p.loss + 0.1 * (3 - epoch), start_ms + epoch, epoch),
                    Metric(schema.M_COST_CPU_HOURS, p.hours * epoch / 3, start_ms + epoch, epoch)]
    client.log_batch(run, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    client.set_terminated(run, "FINISHED")
    return run


def _trial_run(client, exp: str, parent: str, name: str, t: Trial, recipe: Pretraining | None,
               link: str | None,
               reuses: bool, start_ms: int, stage: str) -> str:
    from mlflow.entities import Metric, Param

    tags = {schema.TAG_PARENT: parent, schema.TAG_ROLE: schema.ROLE_TRIAL, schema.TAG_STUDY: name,
            schema.TAG_STAGE: stage, schema.TAG_TRIAL_ID: t.trial_id, schema.TAG_STATUS: t.status}
    if t.key is not None:
        tags |= {schema.TAG_PRETRAIN_KEY: t.key, schema.TAG_PRETRAIN_REUSED: str(reuses).lower()}
        if link is not None:
            tags[schema.TAG_PRETRAIN_RUN] = link
    run = client.create_run(exp, start_time=start_ms, tags=tags, run_name=f"{name}-{t.trial_id}").info.run_id
    params = {"finetune.layer_decay": "0.6", "finetune.epochs": "3",
              **{k: str(v) for k, v in t.params.items()}}
    if recipe is not None:
        params |= {MASK: str(recipe.mask), CROP: str(recipe.crop)}
    epochs = {schema.STATUS_PRUNED: 2, schema.STATUS_FAILED: 0}.get(t.status, len(CURVE))
    metrics = []
    for epoch in range(1, epochs + 1):
        ts = start_ms + 1000 * epoch
        metrics += [Metric(schema.M_VAL_MAUC, t.score + CURVE[epoch - 1], ts, epoch),
                    Metric(schema.M_COST_CPU_HOURS, FINETUNE_HOURS * epoch / len(CURVE), ts, epoch)]
    if t.key is None and stage == "pipeline" and recipe is not None:  # it pre-trained itself (no reuse)
        metrics += [Metric(schema.M_PRETRAIN_LOSS, recipe.loss, start_ms, 3),
                    Metric(f"pretrain/{schema.M_COST_CPU_HOURS}", recipe.hours, start_ms, 3)]
    if t.status == schema.STATUS_FAILED:
        client.set_tag(run, schema.TAG_ERROR, "RuntimeError: simulated crash")
    client.log_batch(run, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    client.set_terminated(run, {schema.STATUS_COMPLETED: "FINISHED", schema.STATUS_PRUNED: "KILLED"}.get(
        t.status, "FAILED"), end_time=start_ms + 1000 * (epochs + 1))
    return run

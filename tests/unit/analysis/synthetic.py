"""A synthetic study in MLflow that follows the run schema exactly, with a KNOWN response surface.

The objective (val/mauc) of a trial is

    0.80 - 0.100 * ((layer_decay - 0.6) / 0.3)^2 - 0.020 * ((drop_path - 0.1) / 0.2)^2
         - 0.008 * ((mask_ratio - 0.85) / 0.1)^2 + noise(sd 0.002)        (randaug_magnitude: no effect)

so the planted optimum is layer_decay 0.6, drop_path 0.1, mask_ratio 0.85 and the importance order
layer_decay >> {drop_path, mask_ratio} >> randaug_magnitude (over the searched ranges drop_path and
mask_ratio move the objective by up to 0.045 and 0.05: their mutual order is not planted).

Knob values come from Optuna's TPE (as in a real study); ASHA is simulated (grace 2 epochs, reduction 2, max
8): a trial below the median of the
earlier trials at a rung stops there with a shorter curve. One trial fails (no metrics), the last one
is still running. Everything is written with MlflowClient.log_batch, so 40 trials take a few seconds.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from thoraxmae.study import schema

OPTIMUM = {"finetune.layer_decay": 0.6, "finetune.drop_path": 0.1, "pretrain.mask_ratio": 0.85}
WEIGHTS = {"finetune.layer_decay": (0.100, 0.3), "finetune.drop_path": (0.020, 0.2),
           "pretrain.mask_ratio": (0.008, 0.1)}  # knob: (depth of the bowl, its width)
IRRELEVANT = "finetune.randaug_magnitude"
MOST_IMPORTANT = "finetune.layer_decay"
SPACE = {
    "pretrain.mask_ratio": {"type": "float", "low": 0.6, "high": 0.95},
    "finetune.layer_decay": {"type": "float", "low": 0.4, "high": 1.0},
    "finetune.drop_path": {"type": "float", "low": 0.0, "high": 0.4},
    "finetune.randaug_magnitude": {"type": "int", "low": 0, "high": 10},
}
EPOCHS, GRACE, REDUCTION = 8, 2, 2
N_STARTUP = 16  # random trials before TPE models the results
PEAK, NOISE_SD = 0.80, 0.002
CURVE_RISE = 0.03  # val/mauc climbs by this much from epoch 1 to the plateau


@dataclass
class SimTrial:
    trial_id: str
    status: str
    params: dict[str, Any]
    curve: list[float] = field(default_factory=list)  # val/mauc per epoch 1..len


@dataclass
class SyntheticStudy:
    name: str
    uri: str
    parent_run_id: str
    trials: list[SimTrial]
    run_ids: dict[str, str] = field(default_factory=dict)  # trial id -> MLflow run id
    experiment_id: str = ""

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.trials)


def objective(params: dict[str, Any]) -> float:
    """The planted surface without noise."""
    return PEAK - sum(depth * ((params[k] - OPTIMUM[k]) / width) ** 2 for k,
                      (depth, width) in WEIGHTS.items())


def spec_dict(name: str, space: dict | None = None) -> dict[str, Any]:
    """A pipeline study spec as study.tracking dumps it (valid for study.spec.parse_spec)."""
    return {
        "name": name, "stage": "pipeline", "data": {"store": "/data/store"},
        "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8, "depth": 4},
        "pretrain": {"epochs": 3, "warmup_epochs": 1, "batch_size": 32, "mask_ratio": 0.9, "crop_min": 0.5},
        "finetune": {"epochs": EPOCHS, "warmup_epochs": 1, "batch_size": 32, "layer_decay": 0.75,
                     "drop_path": 0.2, "randaug_magnitude": 6},
        # TPE picks freely
        "search": {"metric": schema.M_VAL_MAUC, "mode": "max", "num_samples": 40, "coverage": 0,
                   "scheduler": {"type": "asha", "grace_period": GRACE, "reduction_factor": REDUCTION},
                   "space": SPACE if space is None else space},
        "tracking": {"experiment": name},
    }


def simulate_trials(n: int = 40, seed: int = 0, failed_index: int = 5) -> list[SimTrial]:
    """n trials chosen by TPE on the planted surface, ASHA-pruned; one failed, the last running."""
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {k: (IntDistribution(v["low"], v["high"]) if v["type"] == "int"
                 else FloatDistribution(v["low"], v["high"]))
             for k, v in SPACE.items()}
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=N_STARTUP, multivariate=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    rng = np.random.default_rng(seed)
    rungs: dict[int, list[float]] = {}
    trials = []
    for i in range(n):
        ask = study.ask(dists)
        final = objective(ask.params) + rng.normal(0, NOISE_SD)
        curve = [final - CURVE_RISE * math.exp(-(e - 1) / 1.5) + rng.normal(0, 0.001)
                 for e in range(1, EPOCHS + 1)]
        if i == failed_index:
            study.tell(ask, state=optuna.trial.TrialState.FAIL)
            trials.append(SimTrial(f"t{i:03d}", schema.STATUS_FAILED, ask.params))
            continue
        if i == n - 1:
            trials.append(SimTrial(f"t{i:03d}", schema.STATUS_RUNNING, ask.params, curve[:3]))
            continue
        stop = _asha_stop(curve, rungs)
        curve = curve[:stop]
        study.tell(ask, max(curve))
        status = schema.STATUS_COMPLETED if stop == EPOCHS else schema.STATUS_PRUNED
        trials.append(SimTrial(f"t{i:03d}", status, ask.params, curve))
    return trials


def flat_trials(objectives: list[float], status: str = schema.STATUS_COMPLETED,
                seed: int = 0) -> list[SimTrial]:
    """One trial per objective with a flat curve (all epochs, or GRACE for pruned, none for failed) and
    knobs drawn at random in SPACE: ties and constant objectives on demand."""
    rng = np.random.default_rng(seed)
    out = []
    for i, y in enumerate(objectives):
        params = {k: int(rng.integers(v["low"], v["high"] + 1)) if v["type"] == "int"
                  else float(rng.uniform(v["low"], v["high"])) for k, v in SPACE.items()}
        epochs = {schema.STATUS_PRUNED: GRACE, schema.STATUS_FAILED: 0}.get(status, EPOCHS)
        out.append(SimTrial(f"t{i:03d}", status, params, [y] * epochs))
    return out


def _asha_stop(curve: list[float], rungs: dict[int, list[float]]) -> int:
    """The epoch ASHA stops this trial at: the first rung where it is below the top 1/REDUCTION."""
    rung = GRACE
    while rung < EPOCHS:
        seen = rungs.setdefault(rung, [])
        value = curve[rung - 1]
        cutoff = np.quantile(seen, 1 - 1 / REDUCTION) if seen else -math.inf
        seen.append(value)
        if value < cutoff:
            return rung
        rung *= REDUCTION
    return EPOCHS


def write_study(uri: str, name: str, trials: list[SimTrial], artifact_root: Path,
                spec: dict | None = None) -> SyntheticStudy:
    """Write the parent run (spec.yaml) and one child run per trial into experiment `name`."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(name, artifact_location=(artifact_root / name).resolve().as_uri())
    spec = spec_dict(name) if spec is None else spec
    parent = client.create_run(exp, run_name=name, tags={
        schema.TAG_ROLE: schema.ROLE_STUDY, schema.TAG_STUDY: name,
        schema.TAG_STAGE: spec["stage"]}).info.run_id
    client.log_text(parent, yaml.safe_dump(spec, sort_keys=False), schema.ARTIFACT_SPEC)
    t0 = int(time.time() * 1000) - 3_600_000
    run_ids = {}
    for i, trial in enumerate(trials):
        run_ids[trial.trial_id] = _write_trial(client, exp, parent, name, trial, start_ms=t0 + 60_000 * i,
                                               stage=spec["stage"])
    client.set_terminated(parent, "FINISHED")
    return SyntheticStudy(name=name, uri=uri, parent_run_id=parent, trials=trials, run_ids=run_ids,
                          experiment_id=exp)


def write_empty_study(uri: str, name: str, artifact_root: Path) -> None:
    """An experiment with a parent run and no trial runs (a study that never started a trial)."""
    write_study(uri, name, [], artifact_root)


def _write_trial(client, exp: str, parent: str, name: str, trial: SimTrial, start_ms: int,
                 stage: str = "pipeline") -> str:
    from mlflow.entities import Metric, Param, RunTag

    tags = {schema.TAG_PARENT: parent, schema.TAG_ROLE: schema.ROLE_TRIAL, schema.TAG_STUDY: name,
            schema.TAG_STAGE: stage, schema.TAG_TRIAL_ID: trial.trial_id, schema.TAG_STATUS: trial.status}
    run = client.create_run(exp, start_time=start_ms, tags=tags,
                            run_name=f"{name}-{trial.trial_id}").info.run_id
    params = {**{k: str(v) for k, v in trial.params.items()}, "finetune.epochs": str(EPOCHS),
              "pretrain.epochs": "3", "model.name": "vit_tiny_test", "finetune.lr": "0.000125"}
    metrics = []
    for step in (1, 2, 3):  # the pipeline's pre-training phase, logged under its own epochs
        metrics.append(Metric(schema.M_PRETRAIN_LOSS, 0.5 / step, start_ms, step))
    for epoch, value in enumerate(trial.curve, start=1):
        ts = start_ms + 30_000 * epoch
        metrics += [Metric(schema.M_VAL_MAUC, value, ts, epoch), Metric(schema.M_EPOCH_TIME, 30.0, ts, epoch),
                    Metric(schema.M_TRAIN_LOSS, 0.3 - 0.01 * epoch, ts, epoch),
                    Metric(schema.M_COST_CPU_HOURS, epoch * 30.0 / 3600, ts, epoch)]
    if trial.status == schema.STATUS_COMPLETED and trial.curve:
        test = trial.curve[-1] - 0.01
        ts = start_ms + 30_000 * len(trial.curve)
        metrics += [Metric(schema.M_TEST_MAUC, test, ts, len(trial.curve)),
                    Metric(schema.M_TEST_MAUC_CI_LOW, test - 0.012, ts, len(trial.curve)),
                    Metric(schema.M_TEST_MAUC_CI_HIGH, test + 0.012, ts, len(trial.curve))]
    if trial.status == schema.STATUS_FAILED:
        metrics = []
        client.set_tag(run, schema.TAG_ERROR, "RuntimeError: simulated worker crash")
    client.log_batch(run, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                     tags=[RunTag("mlflow.runName", f"{name}-{trial.trial_id}")])
    if trial.status != schema.STATUS_RUNNING:
        mlflow_status = {schema.STATUS_COMPLETED: "FINISHED",
                         schema.STATUS_PRUNED: "KILLED"}.get(trial.status, "FAILED")
        client.set_terminated(run, mlflow_status, end_time=start_ms + 30_000 * max(len(trial.curve), 1))
    return run


# --- confirmation runs (docs/mlflow-schema.md): a recipe re-run with fresh seeds -------------------
SEED_SHARED_SD, SEED_OWN_SD = 0.004, 0.003  # per-seed effect shared by all recipes + each run's own: SD 0.005
# val/mauc per epoch relative to the run's score: best at epoch 3
CONFIRM_CURVE = (-0.02, -0.005, 0.0, -0.003)


def planted_scores(true_means: dict[str, float], seeds: list[int],
                   rng_seed: int = 0) -> dict[str, dict[int, float]]:
    """recipe -> seed -> score: the recipe's true mean + a per-seed effect every recipe shares (the same
    seed gives the same data order and init) + the run's own noise; seed-to-seed SD ~0.005."""
    rng = np.random.default_rng(rng_seed)
    shared = rng.normal(0, SEED_SHARED_SD, len(seeds))
    return {label: {s: mean + shared[i] + rng.normal(0, SEED_OWN_SD) for i, s in enumerate(seeds)}
            for label, mean in true_means.items()}


def write_confirm_run(study: SyntheticStudy, label: str, seed: int | None, score: float,
                      params: dict[str, Any], status: str = schema.STATUS_COMPLETED,
                      source_trial: str | None = None,
                      start_ms: int | None = None, test_score: float | None = None) -> str:
    """One confirmation run as the contract has it: a child of the study's parent run with role
    `confirm`, its recipe label, the repeated trial's run id, a `seed` param, `val/mauc` per epoch (its
    best epoch = `score`, the last one lower) and `test/mauc` once at the end (`test_score`, default
    `score` - 0.01)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri=study.uri)
    tags = {schema.TAG_PARENT: study.parent_run_id, schema.TAG_ROLE: schema.ROLE_CONFIRM,
            schema.TAG_STUDY: study.name, schema.TAG_RECIPE: label, schema.TAG_STATUS: status}
    if source_trial is not None:
        tags[schema.TAG_SOURCE_RUN] = study.run_ids[source_trial]
    start_ms = start_ms or int(time.time() * 1000)
    run = client.create_run(study.experiment_id, start_time=start_ms, tags=tags,
                            run_name=f"{study.name}-confirm-{label}-s{seed}").info.run_id
    logged = {**{k: str(v) for k, v in params.items()}, "finetune.epochs": str(len(CONFIRM_CURVE))}
    if seed is not None:
        logged[schema.PARAM_SEED] = str(seed)
    metrics = []
    if status == schema.STATUS_COMPLETED:
        metrics = [Metric(schema.M_VAL_MAUC, score + d, start_ms + 1000 * e, e) for e,
                   d in enumerate(CONFIRM_CURVE, 1)]
        test = score - 0.01 if test_score is None else test_score
        metrics.append(Metric(schema.M_TEST_MAUC, test, start_ms + 5000, len(CONFIRM_CURVE)))
    else:
        client.set_tag(run, schema.TAG_ERROR, "RuntimeError: simulated confirmation crash")
    client.log_batch(run, metrics=metrics, params=[Param(k, v) for k, v in logged.items()])
    client.set_terminated(run, "FINISHED" if status == schema.STATUS_COMPLETED else "FAILED")
    return run


def study_record(trials: list[SimTrial], name: str = "synthetic", spec: dict | None = None):
    """The StudyRecord analysis.load would read back from `write_study` (no MLflow), for fast unit tests."""
    from thoraxmae.analysis.load import StudyRecord, TrialRecord

    spec = spec_dict(name) if spec is None else spec
    records = []
    t0 = time.time() - 3600
    for i, trial in enumerate(trials):
        start = t0 + 60 * i
        metrics = {}
        if trial.curve:
            metrics = {schema.M_VAL_MAUC: trial.curve[-1],
                       schema.M_COST_CPU_HOURS: len(trial.curve) * 30.0 / 3600}
        if trial.status == schema.STATUS_COMPLETED and trial.curve:
            test = trial.curve[-1] - 0.01
            metrics.update({schema.M_TEST_MAUC: test, schema.M_TEST_MAUC_CI_LOW: test - 0.012,
                            schema.M_TEST_MAUC_CI_HIGH: test + 0.012})
        params = {**{k: str(v) for k, v in trial.params.items()}, "finetune.epochs": str(EPOCHS)}
        history = {schema.M_VAL_MAUC: [(e, v) for e, v in enumerate(trial.curve, start=1)]}
        end = None if trial.status == schema.STATUS_RUNNING else start + 30 * max(len(trial.curve), 1)
        records.append(TrialRecord(f"run{i:03d}", trial.trial_id, trial.status, start, end,
                                   params, metrics, history))
    return StudyRecord(name=name, tracking_uri="memory://", experiment_id="0", parent_run_id=None, spec=spec,
                       stage=spec["stage"], metric=schema.M_VAL_MAUC, mode="max",
                       knobs=tuple(spec["search"]["space"]),
                       space=spec["search"]["space"], trials=records)

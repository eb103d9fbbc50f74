"""The trial driver: a Tune function trainable that runs the trainers' TorchTrainer(s) for one config.

How Tune sees a trial (`study.tune` wires ASHA on the reported `epoch`):
- `finetune` / `pretrain` stage: each epoch's rank-0 report is forwarded unchanged.
- `pipeline` stage: the pre-training epochs are forwarded for tracking but renamed under `pretrain/`
  (`epoch` -> `pretrain/epoch`, `time/epoch_s` -> `pretrain/time/epoch_s`, ...) and carry the scored
  metric as NaN, so they hold no `epoch`: ASHA ignores them and only fine-tuning epochs count
  toward its rungs. Pruning on reconstruction loss would be wrong: the paper's best mask ratio (0.9)
  has the *highest* loss (docs/paper.md sanity figures), so loss ranks pre-training recipes backwards.
  Fine-tuning reports add the pre-training cost to the cumulative `cost/*` so a trial's cost is
  its total.

Restarts (`study resume`, Tune retries): each Train run is named `train-<trial id>[-phase]` under
`<storage_path>/<study>/train`, so a restarted driver resumes it from its last checkpoint. When a
phase's last epoch is forwarded, the callback writes `FINAL_MARKER` beside the run; a restarted
driver then skips that phase (re-reporting its last result, so Tune can close the trial) instead of
starting a Train run that has nothing left to do.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import ray.train
import ray.tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback

from thoraxmae.study import schema
from thoraxmae.study.space import apply_knobs, knob_values
from thoraxmae.study.spec import StudySpec

log = logging.getLogger(__name__)
PHASE_KEY = "phase"  # added to every forwarded result: "pretrain" | "finetune"
FINAL_MARKER = "thoraxmae_final.json"  # {"metrics": last forwarded result, "checkpoint": its dir}


class PhaseReportCallback(TuneReportCallback):
    """Forward each Train report to the Tune trial, tagged (and in a pipeline, renamed) by phase."""

    def __init__(self, phase: str, metric: str, pipeline: bool, final_epoch: int, marker: Path,
                 cost_offset: dict[str, float] | None = None):
        super().__init__()
        self.phase = phase
        self.metric = metric
        self.pipeline = pipeline
        self.final_epoch = final_epoch
        self.marker = marker
        self.cost_offset = cost_offset or {}
        self.checkpoint: str | None = None

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        first = phase_metrics(metrics[0], self.phase, self.metric, self.pipeline, self.cost_offset)
        if checkpoint is not None:
            self.checkpoint = checkpoint.path
        if metrics[0].get(schema.M_EPOCH) == self.final_epoch:
            write_marker(self.marker, {**first, CHECKPOINT_PATH_KEY: self.checkpoint}, self.checkpoint)
        super().after_report(run_context, [first, *metrics[1:]], checkpoint)


def phase_metrics(metrics: dict[str, Any], phase: str, metric: str, pipeline: bool,
                  cost_offset: dict[str, float]) -> dict[str, Any]:
    """One rank-0 report as Tune should see it (see the module docstring)."""
    out = dict(metrics)
    if pipeline and phase == "pretrain":
        out = {(k if k.startswith("pretrain/") else f"pretrain/{k}"): v for k, v in metrics.items()}
        out[metric] = math.nan
    for key, offset in cost_offset.items():
        if key in out:
            out[key] = out[key] + offset
    out[PHASE_KEY] = phase
    return out


def write_marker(path: Path, metrics: dict[str, Any], checkpoint: str | None) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"metrics": metrics, "checkpoint": checkpoint}))
    except OSError as exc:  # storage not on this node's file system: a restart re-enters the Train run
        log.warning("could not write %s: %s", path, exc)


def read_marker(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def trial_driver(config: dict[str, Any], spec: StudySpec) -> None:
    """Tune function trainable. Its config holds the searched knobs (spec paths); on its first line
    it becomes typed phase configs, then the trainers run through Ray Train."""
    knobs = knob_values(config, frozenset(spec.search.space))
    trial_id = ray.tune.get_context().get_trial_id()
    runs_dir = Path(spec.storage_path) / spec.name / "train"
    if spec.stage != "pipeline":
        _phase(spec.stage, spec, knobs, f"train-{trial_id}", runs_dir, pipeline=False)
        return
    done = _phase("pretrain", spec, knobs, f"train-{trial_id}-pretrain", runs_dir, pipeline=True, rereport=False)
    if not done.get("checkpoint"):
        raise RuntimeError(f"trial {trial_id}: pre-training reported no checkpoint; nothing to fine-tune")
    cost = {k: float(v) for k, v in done["metrics"].items()
            if k in (f"pretrain/{schema.M_COST_CPU_HOURS}", f"pretrain/{schema.M_COST_GPU_HOURS}")}
    _phase("finetune", spec, knobs, f"train-{trial_id}-finetune", runs_dir, pipeline=True,
           init=Path(done["checkpoint"]) / "checkpoint.pt",
           cost_offset={k.removeprefix("pretrain/"): v for k, v in cost.items()})


def _phase(phase: str, spec: StudySpec, knobs: dict[str, Any], name: str, runs_dir: Path, *, pipeline: bool,
           rereport: bool = True, init: Path | None = None, cost_offset: dict | None = None) -> dict[str, Any]:
    """Run one phase to its end (or find it already ended); returns its final marker content."""
    marker = runs_dir / name / FINAL_MARKER
    done = read_marker(marker)
    if done is not None:
        log.info("%s already finished (%s); not run again", name, marker)
        if rereport:
            ray.tune.report(done["metrics"])
        return done
    cfg = apply_knobs(spec.phase_config(phase), phase, knobs)
    if init is not None:
        cfg = cfg.model_copy(update={"init": init, "init_format": "thoraxmae"})
    callback = PhaseReportCallback(phase, spec.metric, pipeline, cfg.epochs, marker, cost_offset)
    result = _trainer(phase, spec, cfg, name, runs_dir, callback).fit()
    done = read_marker(marker)
    if done is None:  # the marker could not be written where the controller ran: use the Train result
        last = phase_metrics(result.metrics or {}, phase, spec.metric, pipeline, cost_offset or {})
        done = {"metrics": last, "checkpoint": result.checkpoint.path if result.checkpoint else None}
    return done


def _trainer(phase: str, spec: StudySpec, cfg, name: str, runs_dir: Path, callback) -> ray.train.torch.TorchTrainer:
    from thoraxmae.trainers import api

    run_config = ray.train.RunConfig(
        name=name, storage_path=str(runs_dir), callbacks=[callback],
        failure_config=ray.train.FailureConfig(max_failures=spec.resources.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1))
    data = spec.data_for(phase)
    if phase == "pretrain":
        return api.pretrain_trainer(api.PretrainJob(model=spec.model, data=data, pretrain=cfg),
                                    scaling_config(spec), run_config)
    return api.finetune_trainer(api.FinetuneJob(model=spec.model, data=data, finetune=cfg),
                                scaling_config(spec), run_config)


def scaling_config(spec: StudySpec) -> ray.train.ScalingConfig:
    res = spec.resources
    per_worker = {"CPU": res.cpus_per_worker}
    if res.gpus_per_worker:
        per_worker["GPU"] = res.gpus_per_worker
    return ray.train.ScalingConfig(num_workers=res.workers_per_trial, use_gpu=res.gpus_per_worker > 0,
                                   resources_per_worker=per_worker)

"""The trial driver: a Tune function trainable that runs the trainers' TorchTrainer(s) for one config.

How Tune sees a trial (`study.run.search` wires ASHA on the reported `epoch`):
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

No epoch lost or logged twice after a kill (the MLflow callback logs only what a run lacks):
- The first result a trial forwards after its Train run (re)started, and the result re-reported for
  a finished phase, carry under `HISTORY_KEY` every earlier result of the trial's lineage (a
  pipeline's pre-training too), as forwarded. The worker sends its checkpoint's history with its
  first report after a restore (trainers.runtime); the final marker keeps the whole history. So
  epochs whose checkpoint was recorded while their report never reached the driver (killed in
  between) are back-filled on resume, and never sent to Tune twice: ASHA and Optuna see each epoch
  at most once per driver session, and never an old epoch after a newer one.
- `training_iteration` is the result's place in the lineage (pre-training epochs, then fine-tuning
  epochs after them), not Tune's count of results since the trial (re)started, so Optuna's
  intermediate values keep their steps across restarts. An epoch run again (a restart from an
  older checkpoint) gets its old step: Optuna keeps the value first reported, as MLflow does.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ray.train
import ray.tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback
from ray.tune.result import TRAINING_ITERATION

from thoraxmae.datasets.storage import Location, ray_storage
from thoraxmae.study import schema
from thoraxmae.study.spec.model import StudySpec
from thoraxmae.study.spec.plan import TrialPlan
from thoraxmae.study.storage import StudyStorage
from thoraxmae.study.tracking.results import (
    M_KEY,
    phase_metrics,
    pretrain_link,
    with_history,
    without_history,
)
from thoraxmae.trainers import faults
from thoraxmae.trainers.lineage import HISTORY_METRIC
from thoraxmae.trainers.reporting import CHECKPOINT_FILE

log = logging.getLogger(__name__)
# {"metrics": last forwarded result, "checkpoint": its dir, "history": all}
FINAL_MARKER = "thoraxmae_final.json"


class PhaseReportCallback(TuneReportCallback):
    """Forward each Train report to the Tune trial, tagged (and in a pipeline, renamed) by phase, with the
    lineage history where the module docstring says. `prior`: the forwarded results of the trial's
    earlier phases; `step_offset`: their number (the first epoch of this phase is step_offset + 1)."""

    def __init__(self, phase: str, metric: str, pipeline: bool, final_epoch: int, marker: Location,
                 cost_offset: dict[str, float] | None = None, prior: Iterable[dict[str, Any]] = (),
                 step_offset: int = 0, extra: dict[str, Any] | None = None):
        super().__init__()
        self.extra = extra or {}  # fixed fields added to every forwarded result (the pre-training link)
        self.phase = phase
        self.metric = metric
        self.pipeline = pipeline
        self.final_epoch = final_epoch
        self.marker = marker
        self.cost_offset = cost_offset or {}
        self.checkpoint: str | None = None
        self.prior = list(prior)
        self.step_offset = step_offset
        self.lineage: list[tuple[int, dict[str, Any]]] = []  # (epoch, forwarded result) of this phase
        self.sent = False  # has a result with the history been forwarded by this callback?

    def forwarded(self, metrics: dict[str, Any]) -> dict[str, Any]:
        out = {**phase_metrics(metrics, self.phase, self.metric, self.pipeline, self.cost_offset),
               **self.extra}
        if isinstance(metrics.get(schema.M_EPOCH), int):
            out[TRAINING_ITERATION] = self.step_offset + metrics[schema.M_EPOCH]
        return out

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        raw = dict(metrics[0])
        carried = raw.pop(HISTORY_METRIC, None)
        epoch = raw.get(schema.M_EPOCH)
        first = self.forwarded(raw)
        if checkpoint is not None:  # Ray names it inside the storage's filesystem; the marker keeps a URI
            self.checkpoint = self.marker.child_uri(checkpoint.path)
        if carried is not None:  # the Train run restarted from a checkpoint: its lineage replaces ours
            self.lineage = [(e.get(schema.M_EPOCH, 0), self.forwarded(e)) for e in json.loads(carried)]
        elif isinstance(epoch, int):  # restarted without a checkpoint: epochs from `epoch` on run again
            self.lineage = [(e, r) for e, r in self.lineage if e < epoch]
        history = self.prior + [r for _, r in self.lineage]
        if history and (carried is not None or not self.sent):
            first = with_history(first, history)
        self.sent = True
        self.lineage.append((epoch if isinstance(epoch, int) else 0, without_history(first)))
        if epoch == self.final_epoch:
            write_marker(self.marker, {**without_history(first), CHECKPOINT_PATH_KEY: self.checkpoint},
                         self.checkpoint, history=[*history, without_history(first)])
        faults.hold("forward", self.phase, epoch)  # tests only; no-op otherwise
        super().after_report(run_context, [first, *metrics[1:]], checkpoint)


def write_marker(path: Location, metrics: dict[str, Any], checkpoint: str | None,
                 history: list[dict[str, Any]] | None = None) -> None:
    """Written whole or not at all (Location.write_text), so a kill never leaves half a marker."""
    try:
        path.write_text(json.dumps({"metrics": metrics, "checkpoint": checkpoint,
                                    "history": history or [metrics]}))
    except OSError as exc:  # storage not reachable from this node: a restart re-enters the Train run
        log.warning("could not write %s: %s", path, exc)


def read_marker(path: Location) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def checkpoint_file(folder: str) -> Path | str:
    """The weights file of a checkpoint folder named by a marker: a local Path, or a URI on object storage."""
    loc = Location.of(folder) / CHECKPOINT_FILE
    return loc.path if loc.is_local else loc.uri


def trial_driver(config: dict[str, Any], spec: StudySpec) -> None:
    """Tune function trainable. Its config holds the searched knobs (spec paths); on its first line
    it becomes a typed plan (study.spec.plan), then the trainers run through Ray Train."""
    plan = resolve_encoder(TrialPlan.from_config(spec, config))
    trial_id = ray.tune.get_context().get_trial_id()
    runs_dir = StudyStorage(spec.storage_path).train_runs(spec.name)
    if spec.stage != "pipeline":
        _phase(spec.stage, plan, f"train-{trial_id}", runs_dir, pipeline=False)
        return
    if spec.search.reuse_pretraining:
        done, link, ran_here = _shared_pretrain(plan, trial_id)
        prior = (done.get("history") or [done["metrics"]]) if ran_here else []
        _phase("finetune", plan, f"train-{trial_id}-finetune", runs_dir, pipeline=True,
               init=checkpoint_file(done["checkpoint"]), prior=prior, extra=link,
               step_offset=int(done["metrics"].get(f"pretrain/{schema.M_EPOCH}", 0)) if ran_here else 0)
        return
    done = _phase("pretrain", plan, f"train-{trial_id}-pretrain", runs_dir, pipeline=True, rereport=False)
    if not done.get("checkpoint"):
        raise RuntimeError(f"trial {trial_id}: pre-training reported no checkpoint; nothing to fine-tune")
    cost = {k: float(v) for k, v in done["metrics"].items()
            if k in (f"pretrain/{schema.M_COST_CPU_HOURS}", f"pretrain/{schema.M_COST_GPU_HOURS}")}
    _phase("finetune", plan, f"train-{trial_id}-finetune", runs_dir, pipeline=True,
           init=checkpoint_file(done["checkpoint"]),
           cost_offset={k.removeprefix("pretrain/"): v for k, v in cost.items()},
           prior=done.get("history") or [done["metrics"]],
           step_offset=int(done["metrics"].get(f"pretrain/{schema.M_EPOCH}", 0)))


def _shared_pretrain(plan: TrialPlan, trial_id: str) -> tuple[dict, dict, bool]:
    """The trial's pre-training through the registry (study.run.pipeline): (final marker, link fields for
    every
    forwarded fine-tuning result, whether this trial ran it: then its epochs are part of its lineage)."""
    from thoraxmae.study.run.pipeline import pretrain_once

    def run(name: str, folder: Location, key: str, cfg) -> dict[str, Any]:
        return _phase("pretrain", plan, name, folder, pipeline=True, rereport=False,
                      extra={M_KEY: key}, cfg=cfg)

    done, key, reused = pretrain_once(plan.spec, plan.phase("pretrain"), trial_id, run)
    ran_here = not reused or done.get("trial_id") == trial_id
    return done, pretrain_link(key, reused=not ran_here), ran_here


def resolve_encoder(plan: TrialPlan) -> TrialPlan:
    """`finetune.init` (searched, or the spec's fixed one) that names a registered pre-training
    (`registry:<key>`) -> its checkpoint file."""
    from thoraxmae.study.registry import REF_PREFIX, resolve_init

    if "finetune" not in plan.spec.phases:
        return plan
    init = plan.phase("finetune").init
    if init is not None and str(init).startswith(REF_PREFIX):
        # path or URI
        return plan.with_knobs(**{"finetune.init": str(resolve_init(plan.spec.storage_path, init))})
    return plan


def _phase(phase: str, plan: TrialPlan, name: str, runs_dir: Location, *, pipeline: bool,
           rereport: bool = True, init: Path | str | None = None, cost_offset: dict | None = None,
           prior: list[dict[str, Any]] | None = None, step_offset: int = 0,
           extra: dict[str, Any] | None = None, cfg=None) -> dict[str, Any]:
    """Run one phase to its end (or find it already ended); returns its final marker content. `cfg`: the
    phase config when it is not the plan's (a pre-training that continues a registered one)."""
    marker = runs_dir / name / FINAL_MARKER
    done = read_marker(marker)
    if done is not None:
        log.info("%s already finished (%s); not run again", name, marker)
        if rereport:
            earlier = (done.get("history") or [done["metrics"]])[:-1]
            ray.tune.report(with_history(done["metrics"], earlier))
        return done
    spec = plan.spec
    cfg = cfg if cfg is not None else plan.phase(phase)
    if init is not None:
        cfg = cfg.model_copy(update={"init": init, "init_format": "thoraxmae"})
    callback = PhaseReportCallback(phase, spec.metric, pipeline, cfg.epochs, marker, cost_offset, prior or (),
                                   step_offset, extra)
    result = _trainer(phase, spec, cfg, name, runs_dir, callback).fit()
    done = read_marker(marker)
    if done is None:  # the marker could not be written where the controller ran: use the Train result
        raw = {k: v for k, v in (result.metrics or {}).items() if k != HISTORY_METRIC}
        last = callback.forwarded(raw)
        done = {"metrics": last,
                "checkpoint": runs_dir.child_uri(result.checkpoint.path) if result.checkpoint else None,
                "history": [*(prior or ()), last]}
    return done


def _trainer(phase: str, spec: StudySpec, cfg, name: str, runs_dir: Location,
             callback) -> ray.train.torch.TorchTrainer:
    from thoraxmae.trainers import api

    run_config = ray.train.RunConfig(
        name=name, **ray_storage(runs_dir), callbacks=[callback],
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

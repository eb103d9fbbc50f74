"""MLflow run schema writer (docs/mlflow-schema.md): one parent run per study, one child run per trial.

Names come only from study/schema.py. This module knows nothing of Ray: study/run/tune.py feeds it
from a Tune callback in the study's driver process, so there is one writer per study (safe with
the SQLite backend) and a trial restarted after `study resume` finds its child run by trial id
instead of getting a second one.
"""
from __future__ import annotations

import logging
import math
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from thoraxmae.study import schema
from thoraxmae.study.spec.load import dump_spec
from thoraxmae.study.spec.model import StudySpec
from thoraxmae.study.tracking.lookup import filter_value, tagged_runs
from thoraxmae.trainers.optim import absolute_lr
from thoraxmae.trainers.reporting import CHECKPOINT_FILE

log = logging.getLogger(__name__)

# Reported keys that are metrics of the run schema (Tune adds its own bookkeeping keys beside them).
METRIC_PREFIXES = ("train/", "pretrain/", "val/", "test/", "cost/", "time/", "throughput/")
# a pipeline's pre-training epoch: the step, not a metric
PIPELINE_PRETRAIN_EPOCH = f"pretrain/{schema.M_EPOCH}"
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def schema_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric run-schema metrics of one reported result."""
    out = {}
    for key, value in result.items():
        if not key.startswith(METRIC_PREFIXES) or key == PIPELINE_PRETRAIN_EPOCH or isinstance(value, bool):
            continue
        if isinstance(value, int | float) and math.isfinite(value):
            out[key] = float(value)
    return out


def environment_params() -> dict[str, str]:
    """The installed version of each key package (`env.<package>`) and of Python (`env.python`) in this
    process, the study's driver: what a report reader needs to know the study ran on."""
    import importlib.metadata
    import platform

    params = {schema.ENV_PYTHON: platform.python_version()}
    for package in schema.ENV_PACKAGES:
        try:
            params[f"{schema.ENV_PARAM_PREFIX}{package}"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            params[f"{schema.ENV_PARAM_PREFIX}{package}"] = schema.ENV_MISSING
    return params


def trial_params(spec: StudySpec, phases: Mapping[str, Any]) -> dict[str, str]:
    """Every setting of a trial under its spec path: the phase configs as run (searched knobs
    applied), the model, the data store, the workers, and the derived absolute `*.lr`."""
    params: dict[str, Any] = {f"model.{k}": v for k, v in spec.model.model_dump().items() if v is not None}
    params["data.store"] = spec.data.store
    if spec.pretrain_data is not None and "pretrain" in phases:
        params["pretrain_data.store"] = spec.pretrain_data.store
    params["resources.workers_per_trial"] = spec.resources.workers_per_trial
    for phase, cfg in phases.items():
        params.update({f"{phase}.{k}": v for k, v in cfg.model_dump().items() if v is not None})
        params[schema.DERIVED_LR[f"{phase}.blr"]] = absolute_lr(
            cfg.blr, cfg.batch_size, cfg.accum_iter, spec.resources.workers_per_trial)
    return {k: str(v) for k, v in params.items()}


class StudyTracker:
    """Writes one study's parent and child runs. Cheap to pickle: the client is made on first use."""

    def __init__(self, spec: StudySpec):
        self.spec = spec
        self.uri = spec.tracking.uri
        self._client = None
        self._experiment_id: str | None = None
        self.parent_id: str | None = None

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}

    # --- study ------------------------------------------------------------------------------------
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = ensure_experiment(self.client, self.uri, self.spec.experiment)
        return self._experiment_id

    def find_parent(self) -> str | None:
        runs = tagged_runs(self.client, self.spec.name, schema.ROLE_STUDY, [self.experiment_id()])
        return runs[0].info.run_id if runs else None

    def start_study(self) -> str:
        """The study's parent run: found again on resume, created (with spec.yaml) otherwise."""
        self.parent_id = self.find_parent()
        if self.parent_id is not None:
            self.client.update_run(self.parent_id, status="RUNNING")
            return self.parent_id
        tags = {schema.TAG_ROLE: schema.ROLE_STUDY, schema.TAG_STUDY: self.spec.name,
                schema.TAG_STAGE: self.spec.stage}
        run = self.client.create_run(self.experiment_id(), tags=tags, run_name=self.spec.name)
        self.parent_id = run.info.run_id
        params = {schema.PARAM_METRIC: self.spec.metric, schema.PARAM_MODE: self.spec.mode,
                  schema.PARAM_NUM_SAMPLES: self.spec.search.num_samples,
                  schema.PARAM_KNOBS: ",".join(sorted(self.spec.search.space)), **environment_params()}
        self._log(self.parent_id, params=params)
        self.client.log_text(self.parent_id, dump_spec(self.spec), schema.ARTIFACT_SPEC)
        return self.parent_id

    def end_study(self, failed: bool = False) -> None:
        if self.parent_id is not None:
            self.client.set_terminated(self.parent_id, "FAILED" if failed else "FINISHED")

    # --- trials -----------------------------------------------------------------------------------
    def find_trial(self, trial_id: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id()],
            filter_string=f"tags.`{schema.TAG_PARENT}` = {filter_value(self.parent_id)} and "
                          f"tags.`{schema.TAG_TRIAL_ID}` = {filter_value(trial_id)}")
        return runs[0].info.run_id if runs else None

    def start_trial(self, trial_id: str, params: Mapping[str, str], role: str = schema.ROLE_TRIAL,
                    tags: Mapping[str, str] | None = None) -> str:
        """The trial's child run (status running); the same run again when the trial restarts. `role`:
        trial, or confirm (a confirmation run, with its recipe tags: study/run/confirm.py)."""
        run_id = self.find_trial(trial_id)
        if run_id is None:
            tags = {schema.TAG_PARENT: self.parent_id, schema.TAG_ROLE: role,
                    schema.TAG_STUDY: self.spec.name, schema.TAG_STAGE: self.spec.stage,
                    schema.TAG_TRIAL_ID: trial_id, schema.TAG_STATUS: schema.STATUS_RUNNING, **(tags or {})}
            run_id = self.client.create_run(self.experiment_id(), tags=tags,
                                            run_name=f"{self.spec.name}-{trial_id}").info.run_id
            self._log(run_id, params=params)
        else:
            self.client.update_run(run_id, status="RUNNING")
            self._log(run_id, tags={schema.TAG_STATUS: schema.STATUS_RUNNING})
        return run_id

    # --- shared pre-trainings (study/registry.py) ------------------------------------------
    def find_pretrain(self, key: str, everywhere: bool = False) -> str | None:
        """The MLflow run of a registered pre-training: in this study's experiment, or in any (reuse across
        studies that share a storage path)."""
        experiments = ([e.experiment_id for e in self.client.search_experiments()] if everywhere
                       else [self.experiment_id()])
        runs = self.client.search_runs(
            experiments, max_results=1,
            filter_string=f"tags.`{schema.TAG_ROLE}` = {filter_value(schema.ROLE_PRETRAIN)} and "
                          f"tags.`{schema.TAG_PRETRAIN_KEY}` = {filter_value(key)}")
        return runs[0].info.run_id if runs else None

    def start_pretrain(self, key: str, params: Mapping[str, str]) -> str:
        """The pre-training's own run (role pretrain, a child of this study's parent run); found again on
        resume."""
        run_id = self.find_pretrain(key)
        if run_id is None:
            tags = {schema.TAG_PARENT: self.parent_id, schema.TAG_ROLE: schema.ROLE_PRETRAIN,
                    schema.TAG_STUDY: self.spec.name, schema.TAG_STAGE: "pretrain",
                    schema.TAG_PRETRAIN_KEY: key,
                    schema.TAG_STATUS: schema.STATUS_RUNNING}
            run_id = self.client.create_run(self.experiment_id(), tags=tags,
                                            run_name=f"{self.spec.name}-pretrain-{key[:8]}").info.run_id
            self._log(run_id, params=params)
        return run_id

    def link_pretrain(self, run_id: str, key: str, pretrain_run: str | None, reused: bool) -> None:
        tags = {schema.TAG_PRETRAIN_KEY: key, schema.TAG_PRETRAIN_REUSED: str(reused).lower()}
        if pretrain_run:
            tags[schema.TAG_PRETRAIN_RUN] = pretrain_run
        self._log(run_id, tags=tags)

    def log_study_metrics(self, metrics: Mapping[str, float]) -> None:
        if self.parent_id is not None and metrics:
            self._log(self.parent_id, metrics=metrics)

    def start_single(self, phase: str, params: Mapping[str, str]) -> str:
        """A `thoraxmae pretrain|finetune` run (role=run, no parent) in the spec's experiment."""
        tags = {schema.TAG_ROLE: schema.ROLE_RUN, schema.TAG_STUDY: self.spec.name, schema.TAG_STAGE: phase,
                schema.TAG_STATUS: schema.STATUS_RUNNING}
        run_id = self.client.create_run(self.experiment_id(), tags=tags,
                                        run_name=f"{self.spec.name}-{phase}").info.run_id
        self._log(run_id, params=params)
        self.client.log_text(run_id, dump_spec(self.spec), schema.ARTIFACT_SPEC)
        return run_id

    def log_epoch(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        self._log(run_id, metrics=metrics, step=step)

    def last_step(self, run_id: str, key: str) -> int:
        """The last step logged for `key` in a run (0 when none): where a restarted trial resumes logging."""
        return max((m.step for m in self.client.get_metric_history(run_id, key)), default=0)

    def logged_steps(self, run_id: str) -> dict[str, set[int]]:
        """{metric: steps logged} of a run: what a resumed trial must not log again."""
        keys = self.client.get_run(run_id).data.metrics
        return {key: {m.step for m in self.client.get_metric_history(run_id, key)} for key in keys}

    def log_steps(self, run_id: str, rows: list[tuple[int, Mapping[str, float]]]) -> None:
        """Several epochs' metrics, [(step, {metric: value})], in as few batches as MLflow allows."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, int(step)) for step, metrics in sorted(rows, key=lambda r: r[0])
              for k, v in metrics.items()]
        for i in range(0, len(ms), 1000):  # log_batch takes <= 1000 metrics
            self.client.log_batch(run_id, metrics=ms[i:i + 1000])

    def end_trial(self, run_id: str, status: str, error: str | None = None) -> None:
        """The run's final status (and error). A run that ends well after an earlier attempt failed (a trial
        re-run by `study resume`) loses that attempt's error tag: the tag says why the run failed, and it
        did not (the old trace stays in Tune's error file of that attempt)."""
        tags = {schema.TAG_STATUS: status}
        if error:
            tags[schema.TAG_ERROR] = error[:4000]
        self._log(run_id, tags=tags)
        if status != schema.STATUS_FAILED and schema.TAG_ERROR in self.client.get_run(run_id).data.tags:
            self.client.delete_tag(run_id, schema.TAG_ERROR)
        self.client.set_terminated(run_id, schema.MLFLOW_STATUS[status])

    def log_checkpoint(self, run_id: str, checkpoint_dir: Path) -> None:
        """The best weights: `best_model.pt` (fine-tuning) or the MAE weights of `checkpoint.pt`."""
        best = checkpoint_dir / "best_model.pt"
        if best.is_file():
            self.client.log_artifact(run_id, str(best), schema.ARTIFACT_CHECKPOINT_DIR)
            return
        full = checkpoint_dir / CHECKPOINT_FILE
        if not full.is_file():
            log.warning("no checkpoint file in %s; nothing logged for run %s", checkpoint_dir, run_id)
            return
        import torch

        state = torch.load(full, map_location="cpu", weights_only=True)
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({"model": state["model"]}, Path(tmp) / "model.pt")
            self.client.log_artifact(run_id, str(Path(tmp) / "model.pt"), schema.ARTIFACT_CHECKPOINT_DIR)

    def log_auc_table(self, run_id: str, metric: str, mode: str) -> None:
        """per_class_auc.csv: label, val AUC at the best epoch (by `metric`), test AUC when evaluated."""
        run = self.client.get_run(run_id)
        latest = run.data.metrics
        val_keys = sorted(k for k in latest if k.startswith(schema.M_VAL_AUC_PREFIX))
        if not val_keys:
            return
        history = {m.step: m.value for m in self.client.get_metric_history(run_id, metric)}
        best_step = (max if mode == "max" else min)(history, key=history.get) if history else None
        rows = ["label,val_auc,test_auc,best_epoch"]
        for key in val_keys:
            label = key[len(schema.M_VAL_AUC_PREFIX):]
            by_step = {m.step: m.value for m in self.client.get_metric_history(run_id, key)}
            val = by_step.get(best_step, latest[key])
            test = latest.get(schema.test_auc(label))
            rows.append(f"{label},{val:.6f},{'' if test is None else f'{test:.6f}'},{best_step}")
        self.client.log_text(run_id, "\n".join(rows) + "\n", schema.ARTIFACT_AUC_TABLE)

    def _log(self, run_id: str, *, params: Mapping[str, Any] | None = None,
             metrics: Mapping[str, float] | None = None,
             step: int = 0, tags: Mapping[str, str] | None = None) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        ms = [Metric(k, float(v), now, int(step)) for k, v in (metrics or {}).items()]
        ps = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
        ts = [RunTag(k, str(v)) for k, v in (tags or {}).items()]
        # log_batch takes <= 100 params / 1000 metrics
        for i in range(0, max(len(ms), len(ps), len(ts), 1), 100):
            self.client.log_batch(run_id, metrics=ms[i:i + 100], params=ps[i:i + 100], tags=ts[i:i + 100])


def ensure_experiment(client, uri: str, name: str) -> str:
    """The experiment's id, created when missing; with SQLite, artifacts go beside the database."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    m = re.fullmatch(r"sqlite:///(.+)", uri)
    if m:
        location = (Path(m.group(1)).parent / "mlartifacts" / name).resolve().as_uri()
    # the MLflow 3 UI opens an experiment of this kind on its training runs, not the GenAI trace overview
    return client.create_experiment(name, artifact_location=location,
                                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})

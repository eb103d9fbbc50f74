"""The study spec's typed model: one pydantic object per section, and the values derived from them.

Loading a spec from YAML (paths, `--set`, defaults) and the meaning checks across sections live in
study.spec.load and study.spec.checks; `load.parse_spec` is the one way from a mapping to a checked
StudySpec. The YAML layout (every section but `name`, `stage`, `data` and the phases the stage runs is
optional):
Layout (every section but `name`, `stage`, `data` and the phases the stage runs is optional):

    name: demo                      # experiment name and Tune run name ([A-Za-z0-9_.-])
    stage: pipeline                 # pretrain | finetune | pipeline (pre-train, then fine-tune, one trial)
    data: {store: ../store}         # datasets.config.DataConfig
    pretrain_data: {store: ../mix}  # optional: the pre-training store when it differs (e.g. X-rays 0.3M)
    model: {name: vit_tiny_test}    # trainers.config.ModelConfig
    pretrain: {...}                 # trainers.config.PretrainConfig (stages pretrain, pipeline)
    finetune: {...}                 # trainers.config.FinetuneConfig (stages finetune, pipeline)
    search:
      metric: val/mauc              # default val/mauc (finetune, pipeline) or pretrain/loss (pretrain)
      mode: max                     # default max for val/*, min otherwise
      num_samples: 8
      sampler: {type: tpe, seed: 0, n_startup_trials: 4, multivariate: true}
      scheduler: {type: asha, grace_period: 1, reduction_factor: 2}   # max_t defaults to the epochs
      points_to_evaluate: [paper, {finetune.layer_decay: 0.75}]       # `paper` = docs/paper.md recipe
      space:
        finetune.layer_decay: {type: float, low: 0.4, high: 0.9}
        finetune.randaug_magnitude: {type: int, low: 0, high: 12, step: 3}
        pretrain.mask_ratio: {type: categorical, choices: [0.75, 0.9]}
    resources: {workers_per_trial: 1, cpus_per_worker: 1, gpus_per_worker: 0.5, max_concurrent_trials: 2}
    tracking: {uri: sqlite:///mlflow.db, experiment: demo}
    storage_path: studies

Relative paths written in the YAML are relative to the spec file; `--set` values are relative to the
working directory. Defaults: tracking.uri = $MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db,
tracking.experiment = name, storage_path = <cwd>/studies. `load_spec` returns them resolved (absolute).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from thoraxmae.datasets.config import ConfigModel, DataConfig, PathOrUri
from thoraxmae.study import schema
from thoraxmae.study.errors import SpecError
from thoraxmae.study.spec.space import KnobSpace
from thoraxmae.study.spec.tournament import TournamentConfig
from thoraxmae.trainers.config import FinetuneConfig, ModelConfig, PretrainConfig

Stage = Literal["pretrain", "finetune", "pipeline"]
STAGE_PHASES: dict[str, tuple[str, ...]] = {
    "pretrain": ("pretrain",),
    "finetune": ("finetune",),
    "pipeline": ("pretrain", "finetune"),
}
MAX_TRIALS = 10_000  # search.num_samples: one MLflow run and one Tune trial folder each
PAPER_POINT = "paper"  # in points_to_evaluate: the paper's recipe (study.schema.PAPER_RECIPE) on the space


class SamplerConfig(ConfigModel):
    """Optuna sampler: TPE (seeded, multivariate + group) or random."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["tpe", "random"] = "tpe"
    seed: int = 0
    n_startup_trials: int = Field(10, ge=0, description="random trials before TPE models the results")
    multivariate: bool = True


class SchedulerConfig(ConfigModel):
    """Early stopping by Tune's ASHA on `training_iteration` (= epochs reported to Tune)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["asha", "none"] = "asha"
    grace_period: int = Field(1, ge=1, description="epochs every trial runs before it can be stopped")
    reduction_factor: float = Field(2, gt=1)
    max_t: int | None = Field(None, ge=1, description="default: the epochs of the scored phase")


class SearchConfig(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    metric: str | None = None
    mode: Literal["max", "min"] | None = None
    num_samples: int = Field(1, ge=1, le=MAX_TRIALS)
    sampler: SamplerConfig = SamplerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    points_to_evaluate: list[dict[str, Any] | Literal["paper"]] = Field(default_factory=list)
    space: dict[str, KnobSpace] = Field(default_factory=dict)
    coverage: int = Field(2, ge=0, description="trials per pre-training recipe (pipeline) or encoder "
                          "(finetune.init) before the sampler exploits; 0 turns coverage off "
                          "(study/spec/coverage.py)")
    reuse_pretraining: bool = Field(True, description="pipeline: pre-train each recipe once per storage "
                                    "and fine-tune every trial of that recipe from it (study/registry.py)")
    tournament: TournamentConfig | None = Field(None, description="pipeline: compare the pre-training "
                                                                  "recipes by "
                                                "successive halving over pre-training epochs "
                                                "(study/spec/tournament.py)")


class ResourcesConfig(ConfigModel):
    """Per trial: a Train worker group of `workers_per_trial` workers; fractional GPUs allowed."""

    model_config = ConfigDict(extra="forbid")

    workers_per_trial: int = Field(1, ge=1, le=1024)
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0)
    max_concurrent_trials: int = Field(1, ge=1, le=1024)
    max_failures: int = Field(0, ge=0, description="Train worker-group restarts per trial (from checkpoint)")

    @model_validator(mode="after")
    def _check(self) -> ResourcesConfig:
        g = self.gpus_per_worker
        if g > 1 and g != int(g):
            raise ValueError(f"resources.gpus_per_worker={g}: above 1 it must be a whole number")
        return self


class ConfirmConfig(ConfigModel):
    """Run at the end of `study run`: the chosen recipes and a reference re-run with shared seeds
    (study/run/confirm.py). Defaults from benchmarks/search_quality.py: 3 x 3 lands the pick within 0.1 pt."""

    model_config = ConfigDict(extra="forbid")

    top: int = Field(3, ge=1, description="recipes to confirm: the top-k median, then the best smoothed "
                                          "estimates")
    seeds: int = Field(3, ge=2, description="fresh seeds per recipe, the same for every recipe (paired)")
    reference: Path | None = Field(None, description="reference recipe YAML (knob: value); default the "
                                                     "paper's")
    pretrain_seeds: int = Field(1, ge=1, le=100, description="pipeline studies: pre-training seeds per "
                                "recipe (1: the study's pre-trainings are reused; more: each recipe is "
                                "pre-trained again with other seeds, shared by all recipes)")


class TrackingConfig(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///<cwd>/mlflow.db")
    experiment: str | None = Field(None, description="default: the study name")


class StudySpec(ConfigModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=rf"^{schema.STUDY_NAME.pattern}$", max_length=100)
    stage: Stage
    data: DataConfig
    pretrain_data: DataConfig | None = Field(None, description="pre-training store when it differs from "
                                                               "`data`")
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig | None = None
    finetune: FinetuneConfig | None = None
    search: SearchConfig = SearchConfig()
    resources: ResourcesConfig = ResourcesConfig()
    tracking: TrackingConfig = TrackingConfig()
    confirm: ConfirmConfig | None = None
    storage_path: PathOrUri | None = Field(None, description="Tune storage: a folder every node reaches, or "
                                                             "an "
                                            "object-store URI (s3://bucket/tune); default <cwd>/studies")

    # --- derived values (never written back) ----------------------------------------------------
    @property
    def phases(self) -> tuple[str, ...]:
        return STAGE_PHASES[self.stage]

    @property
    def metric(self) -> str:
        if self.search.metric:
            return self.search.metric
        return schema.M_PRETRAIN_LOSS if self.stage == "pretrain" else schema.M_VAL_MAUC

    @property
    def mode(self) -> str:
        if self.search.mode:
            return self.search.mode
        return "max" if self.metric.startswith(("val/", "test/")) else "min"

    @property
    def scored_phase(self) -> str:
        """The phase whose epochs Tune sees (pipeline: fine-tuning; see study/run/tune.py)."""
        return "pretrain" if self.stage == "pretrain" else "finetune"

    @property
    def max_t(self) -> int:
        """ASHA's max_t: the scored phase's epochs (the largest searched value if epochs is searched)."""
        if self.search.scheduler.max_t is not None:
            return self.search.scheduler.max_t
        knob = f"{self.scored_phase}.epochs"
        dist = self.search.space.get(knob)
        if dist is not None:
            return int(max(v for _, v in dist.bounds()))
        return getattr(self, self.scored_phase).epochs

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    def explicit_points(self) -> list[dict[str, Any]]:
        """points_to_evaluate, complete (OptunaSearch needs every knob): `paper` becomes the paper's
        values of the searched knobs, and a knob a point leaves out takes the spec's fixed value. The
        coverage points follow them (study.spec.coverage.study_points)."""
        out = []
        for point in self.search.points_to_evaluate:
            if point == PAPER_POINT:
                point = {k: v for k, v in schema.PAPER_RECIPE.items() if k in self.search.space}
            full = {}
            for knob in self.search.space:
                if knob in point:
                    full[knob] = point[knob]
                else:
                    phase, field = knob.split(".", 1)
                    full[knob] = getattr(getattr(self, phase), field, None)
            full.update({k: v for k, v in point.items() if k not in full})
            out.append(full)
        return out

    def data_for(self, phase: str) -> DataConfig:
        """The store a phase reads: `pretrain_data` for pre-training when given, else `data`."""
        return self.pretrain_data if phase == "pretrain" and self.pretrain_data is not None else self.data

    def phase_config(self, phase: str) -> PretrainConfig | FinetuneConfig:
        cfg = getattr(self, phase)
        if cfg is None:
            raise SpecError(f"{phase}: this spec (stage {self.stage}) has no {phase} section")
        return cfg


# --- loading ------------------------------------------------------------------------------------

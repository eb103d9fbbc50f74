"""MLflow run schema: the contract between study/ (writer) and analysis/ (reader). docs/mlflow-schema.md.

Imports neither Ray nor MLflow (nor torch; only pydantic for the typed configs' knob facts), so
analysis can import it cheaply. The metric names are
those the trainers report (trainers/reporting.py), imported from there so they cannot drift.
"""
from __future__ import annotations

import re
from typing import Any

from thoraxmae.trainers.config import FinetuneConfig, PretrainConfig, knob_fields

# --- metrics (step = epoch): the names the training loops report, defined once in trainers ------
from thoraxmae.trainers.reporting import (  # constants only: no torch, no Ray
    M_BEST_EPOCH,
    M_COST_CPU_HOURS,
    M_COST_GPU_HOURS,
    M_EPOCH,
    M_EPOCH_TIME,
    M_LR,
    M_PRETRAIN_LOSS,
    M_TEST_ACC,
    M_TEST_AUC_PREFIX,
    M_TEST_MAUC,
    M_TEST_MAUC_CI_HIGH,
    M_TEST_MAUC_CI_LOW,
    M_THROUGHPUT,
    M_TRAIN_LOSS,
    M_VAL_ACC,
    M_VAL_AUC_PREFIX,
    M_VAL_MAUC,
)

# --- tags ---------------------------------------------------------------------------------------
TAG_ROLE = "thoraxmae.role"
ROLE_STUDY = "study"
ROLE_TRIAL = "trial"
ROLE_RUN = "run"  # a single `thoraxmae pretrain|finetune` run (no search)
# a confirmation run: a recipe re-run with a fresh seed (child of the study's parent run)
ROLE_CONFIRM = "confirm"
# confirm runs: `trial-<trial_id>` (a search trial's recipe), `median` or `reference`
TAG_RECIPE = "thoraxmae.recipe"
# confirm runs: MLflow run id of the trial repeated (absent when none ran it;
TAG_SOURCE_RUN = "thoraxmae.source_run"
# on `reference` runs: the search trial whose knobs equal the reference's, run once as the reference)
RECIPE_REFERENCE = "reference"
RECIPE_MEDIAN = "median"  # the top-k median recipe (analysis/recipe.py) when no search trial ran exactly it
RECIPE_TRIAL_PREFIX = "trial-"
PARAM_SEED = "seed"  # confirm runs: the seed, an int
ROLE_PRETRAIN = "pretrain"  # a registered pre-training (study/registry.py), child of the study that ran it
ROLE_EVALUATION = "evaluation"  # `thoraxmae evaluate CHECKPOINT --store STORE`
TAG_PRETRAIN_KEY = "thoraxmae.pretrain_key"  # pretrain runs and every pipeline trial/confirm run that used it
TAG_PRETRAIN_RUN = "thoraxmae.pretrain_run"  # trial/confirm runs: MLflow run id of the pre-training they used
# trial runs: "true" if it fine-tuned a pre-training it did not run
TAG_PRETRAIN_REUSED = "thoraxmae.pretrain_reused"
# parent run metrics of a pipeline study (logged at its end): pre-training compute actually spent by this
# study
# vs what a study that pre-trains in every trial would have spent (cost unit: cpu_hours or gpu_hours)
M_PRETRAIN_COST_SPENT = "cost/pretrain_{unit}"
M_PRETRAIN_COST_NO_REUSE = "cost/pretrain_{unit}_no_reuse"
TAG_STUDY = "thoraxmae.study"
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a study's name, the TAG_STUDY value (spec `name`)
TAG_STAGE = "thoraxmae.stage"
TAG_TRIAL_ID = "thoraxmae.trial_id"
TAG_STATUS = "thoraxmae.status"
TAG_ERROR = "thoraxmae.error"
TAG_PARENT = "mlflow.parentRunId"
STATUS_COMPLETED = "completed"
STATUS_PRUNED = "pruned"
STATUS_FAILED = "failed"
STATUS_RUNNING = "running"
# A trial's status <-> MLflow's run status (what the MLflow UI shows): written by study.tracking.writer, read
# back by analysis.load for runs without a status tag (still running, or older than the tag).
MLFLOW_STATUS = {STATUS_COMPLETED: "FINISHED", STATUS_PRUNED: "KILLED", STATUS_FAILED: "FAILED"}
FROM_MLFLOW_STATUS = {**{v: k for k, v in MLFLOW_STATUS.items()}, "RUNNING": STATUS_RUNNING,
                      "SCHEDULED": STATUS_RUNNING}
# Parent-run params: what the study searched for and how (docs/mlflow-schema.md)
PARAM_METRIC = "search.metric"
PARAM_MODE = "search.mode"
PARAM_NUM_SAMPLES = "search.num_samples"
PARAM_KNOBS = "search.knobs"  # the searched knobs, comma-separated
TRIAL_STATUSES = (STATUS_COMPLETED, STATUS_PRUNED, STATUS_FAILED, STATUS_RUNNING)

# --- artifacts ----------------------------------------------------------------------------------
ARTIFACT_SPEC = "spec.yaml"
ARTIFACT_CHECKPOINT_DIR = "checkpoint"
ARTIFACT_AUC_TABLE = "per_class_auc.csv"
ARTIFACT_REPORT_DIR = "report"

# --- the software a study ran on: study run params `env.<package>` = its installed version
# -------------------
ENV_PARAM_PREFIX = "env."
ENV_PYTHON = "env.python"  # the driver's Python version
ENV_PACKAGES = ("thoraxmae", "ray", "torch", "timm", "optuna", "mlflow", "pandas", "pyarrow", "pydantic")
ENV_MISSING = "not installed"

# --- params: knob names are spec paths --------------------------------------------------------------
# Derived from the typed configs' `knob()` fields (trainers/config.py), the one source of each knob's
# name, unit and paper value.
_PHASE_CONFIGS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig}
KNOB_FACTS: dict[str, dict[str, Any]] = {f"{phase}.{name}": facts for phase, cls in _PHASE_CONFIGS.items()
                                         for name, facts in knob_fields(cls).items()}
PRETRAIN_KNOBS = tuple(k for k in KNOB_FACTS if k.startswith("pretrain."))
FINETUNE_KNOBS = tuple(k for k in KNOB_FACTS if k.startswith("finetune."))
KNOWN_KNOBS = PRETRAIN_KNOBS + FINETUNE_KNOBS
DERIVED_LR = {"pretrain.blr": "pretrain.lr", "finetune.blr": "finetune.lr"}  # absolute lr, logged as derived

# The paper's ViT-S recipe (docs/paper.md), the default reference for the report's comparison.
PAPER_RECIPE: dict[str, Any] = {k: f["default"] for k, f in KNOB_FACTS.items() if f["paper"]}


def knob_label(knob: str) -> str:
    """`finetune.randaug_magnitude (RandAug magnitude, 0-10)`; the bare name for an unknown knob."""
    facts = KNOB_FACTS.get(knob)
    if facts is None:
        return knob
    unit = facts["unit"]
    if facts["low"] is not None and facts["high"] is not None and facts["high"] > 1:
        unit = f"{unit}, {facts['low']:g}-{facts['high']:g}"
    return f"{knob} ({unit})"


def val_auc(label: str) -> str:
    return f"{M_VAL_AUC_PREFIX}{label}"


def test_auc(label: str) -> str:
    return f"{M_TEST_AUC_PREFIX}{label}"

# --- recipe tournaments (study/run/tournament.py, docs/mlflow-schema.md)
# ---------------------------------------
# scoring runs: `e<rung>-r<recipe>-s<config>` (also their trial id)
TAG_TOURNAMENT_TASK = "thoraxmae.tournament.task"
# scoring runs: the pre-training epochs of the encoder scored
TAG_TOURNAMENT_RUNG = "thoraxmae.tournament.rung"
TAG_TOURNAMENT_RECIPE = "thoraxmae.tournament.recipe"  # scoring runs: the recipe's label (knob=value, ...)
TAG_TOURNAMENT_CONFIG = "thoraxmae.tournament.config"  # scoring runs: j, the paired scoring configuration
TAG_TOURNAMENT_WINNER = "thoraxmae.tournament.winner"  # parent run: the winning recipe's label
# parent run: `registry:<entry>` of the winner at the last rung
TAG_TOURNAMENT_ENCODER = "thoraxmae.tournament.encoder"
# parent run: every rung's promotion evidence (study/run/tournament.py)
ARTIFACT_TOURNAMENT = "tournament/bracket.json"
ARTIFACT_RUNG = "tournament/rung-{epochs}.json"  # parent run: one rung's evidence, logged when it is decided
M_TOURNAMENT_EPOCHS = "tournament/pretrain_epochs"  # parent run: pre-training epochs spent
M_TOURNAMENT_FULL = "tournament/pretrain_epochs_full"  # parent run: every recipe taken to the last rung
M_TOURNAMENT_ONE = "tournament/pretrain_epochs_one"  # parent run: one pre-training to the last rung

"""MLflow run schema: the contract between study/ (writer) and analysis/ (reader). docs/mlflow-schema.md.

Imports neither Ray nor MLflow (nor torch), so analysis can import it cheaply. The metric names are
those the trainers report (trainers/reporting.py), imported from there so they cannot drift.
"""
from __future__ import annotations

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
ROLE_CONFIRM = "confirm"  # a confirmation run: a recipe re-run with a fresh seed (child of the study's parent run)
TAG_RECIPE = "thoraxmae.recipe"  # confirm runs: `trial-<trial_id>` (a search trial's recipe) or `reference`
TAG_SOURCE_RUN = "thoraxmae.source_run"  # confirm runs: MLflow run id of the trial repeated (absent for reference)
RECIPE_REFERENCE = "reference"
RECIPE_TRIAL_PREFIX = "trial-"
PARAM_SEED = "seed"  # confirm runs: the seed, an int
TAG_STUDY = "thoraxmae.study"
TAG_STAGE = "thoraxmae.stage"
TAG_TRIAL_ID = "thoraxmae.trial_id"
TAG_STATUS = "thoraxmae.status"
TAG_ERROR = "thoraxmae.error"
TAG_PARENT = "mlflow.parentRunId"
STATUS_COMPLETED = "completed"
STATUS_PRUNED = "pruned"
STATUS_FAILED = "failed"
STATUS_RUNNING = "running"
TRIAL_STATUSES = (STATUS_COMPLETED, STATUS_PRUNED, STATUS_FAILED, STATUS_RUNNING)

# --- artifacts ----------------------------------------------------------------------------------
ARTIFACT_SPEC = "spec.yaml"
ARTIFACT_CHECKPOINT_DIR = "checkpoint"
ARTIFACT_AUC_TABLE = "per_class_auc.csv"
ARTIFACT_REPORT_DIR = "report"

# --- params: knob names are spec paths ----------------------------------------------------------
PRETRAIN_KNOBS = (
    "pretrain.mask_ratio",
    "pretrain.crop_min",
    "pretrain.blr",
    "pretrain.weight_decay",
    "pretrain.epochs",
    "pretrain.norm_pix_loss",
)
FINETUNE_KNOBS = (
    "finetune.layer_decay",
    "finetune.randaug_magnitude",
    "finetune.drop_path",
    "finetune.blr",
    "finetune.crop_min",
    "finetune.weight_decay",
    "finetune.epochs",
)
KNOWN_KNOBS = PRETRAIN_KNOBS + FINETUNE_KNOBS
DERIVED_LR = {"pretrain.blr": "pretrain.lr", "finetune.blr": "finetune.lr"}  # absolute lr, logged as derived

# The paper's ViT-S recipe (docs/paper.md), the default reference for the report's comparison.
PAPER_RECIPE = {
    "pretrain.mask_ratio": 0.90,
    "pretrain.crop_min": 0.5,
    "pretrain.blr": 1.5e-4,
    "pretrain.weight_decay": 0.05,
    "pretrain.norm_pix_loss": False,
    "finetune.layer_decay": 0.55,
    "finetune.randaug_magnitude": 6,
    "finetune.drop_path": 0.2,
    "finetune.blr": 2.5e-4,
    "finetune.crop_min": 0.08,
    "finetune.weight_decay": 0.05,
}


def val_auc(label: str) -> str:
    return f"{M_VAL_AUC_PREFIX}{label}"


def test_auc(label: str) -> str:
    return f"{M_TEST_AUC_PREFIX}{label}"

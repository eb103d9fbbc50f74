"""MLflow run schema: the contract between study/ (writer) and analysis/ (reader). DESIGN.md.

Imports neither Ray nor MLflow, so analysis can import it cheaply. Trainers report metrics under
the same names (trainers/reporting.py); a unit test checks the two never drift.
"""
from __future__ import annotations

# --- tags ---------------------------------------------------------------------------------------
TAG_ROLE = "thoraxmae.role"
ROLE_STUDY = "study"
ROLE_TRIAL = "trial"
ROLE_RUN = "run"  # a single `thoraxmae pretrain|finetune` run (no search)
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

# --- metrics (step = epoch) ---------------------------------------------------------------------
M_EPOCH = "epoch"
M_TRAIN_LOSS = "train/loss"
M_PRETRAIN_LOSS = "pretrain/loss"
M_VAL_MAUC = "val/mauc"
M_VAL_AUC_PREFIX = "val/auc/"  # + label name
M_VAL_ACC = "val/acc"  # COVIDx (multi-class)
M_TEST_MAUC = "test/mauc"
M_TEST_MAUC_CI_LOW = "test/mauc_ci_low"
M_TEST_MAUC_CI_HIGH = "test/mauc_ci_high"
M_TEST_AUC_PREFIX = "test/auc/"
M_TEST_ACC = "test/acc"
M_COST_GPU_HOURS = "cost/gpu_hours"
M_COST_CPU_HOURS = "cost/cpu_hours"
M_EPOCH_TIME = "time/epoch_s"
M_THROUGHPUT = "throughput/img_s"
M_LR = "train/lr"
M_BEST_EPOCH = "val/best_epoch"  # epoch of the best val/mauc so far (fine-tuning)

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

# The paper's ViT-S recipe (FACTS.md), the default reference for the report's comparison.
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

"""Names of the metrics the training loops report (step = epoch). They are the MLflow run schema's
names (study/schema.py, docs/mlflow-schema.md); trainers may not import study, so a unit test checks the two
lists never drift."""
from __future__ import annotations

M_EPOCH = "epoch"
M_TRAIN_LOSS = "train/loss"
M_PRETRAIN_LOSS = "pretrain/loss"
M_LR = "train/lr"
M_VAL_MAUC = "val/mauc"
M_VAL_AUC_PREFIX = "val/auc/"
M_VAL_ACC = "val/acc"
M_TEST_MAUC = "test/mauc"
M_TEST_MAUC_CI_LOW = "test/mauc_ci_low"
M_TEST_MAUC_CI_HIGH = "test/mauc_ci_high"
M_TEST_AUC_PREFIX = "test/auc/"
M_TEST_ACC = "test/acc"
M_COST_GPU_HOURS = "cost/gpu_hours"
M_COST_CPU_HOURS = "cost/cpu_hours"
M_EPOCH_TIME = "time/epoch_s"
M_THROUGHPUT = "throughput/img_s"
M_BEST_EPOCH = "val/best_epoch"
# bootstrap intervals of the test evaluation beyond the mean AUC's (trainers.metrics.BootstrapCI.metrics)
M_TEST_AUC_CI_LOW_PREFIX = "test/auc_ci_low/"
M_TEST_AUC_CI_HIGH_PREFIX = "test/auc_ci_high/"
M_TEST_ACC_CI_LOW = "test/acc_ci_low"
M_TEST_ACC_CI_HIGH = "test/acc_ci_high"

# reported strings (tags or artifacts for the tracker, not metrics)
TEST_CI_UNIT = "test/ci_unit"  # "patient" or "image": what the test bootstrap resampled
# JSON of finetune.init's LoadReport: first report after a start, and last
INIT_LOAD_REPORT = "init/load_report"

CHECKPOINT_FILE = "checkpoint.pt"  # full training state (model, optimizer, epoch, ...), thoraxmae format
BEST_MODEL_FILE = "best_model.pt"  # fine-tuning: best-on-validation weights, timm names

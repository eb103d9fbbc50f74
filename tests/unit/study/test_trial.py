"""How Tune sees a trial's reports (pipeline phases, costs) and how a finished trial is classified."""
from __future__ import annotations

import math

import pytest

from thoraxmae.study import schema
from thoraxmae.study.spec.load import parse_spec


@pytest.fixture()
def pipeline_spec(tmp_path):
    raw = {"name": "p", "stage": "pipeline", "data": {"store": str(tmp_path)},
           "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8},
           "pretrain": {"epochs": 2, "warmup_epochs": 0}, "finetune": {"epochs": 4, "warmup_epochs": 1},
           "search": {"num_samples": 2, "scheduler": {"grace_period": 1},
                      "space": {"finetune.epochs": {"type": "int", "low": 2, "high": 6}}}}
    return parse_spec(raw)


def test_pipeline_pretraining_reports_are_renamed_and_hidden_from_asha():
    from thoraxmae.study.tracking.results import PHASE_KEY, phase_metrics

    report = {"epoch": 2, "pretrain/loss": 0.05, "time/epoch_s": 3.0, "cost/cpu_hours": 0.1}
    out = phase_metrics(report, "pretrain", schema.M_VAL_MAUC, pipeline=True, cost_offset={})
    assert schema.M_EPOCH not in out  # ASHA ignores results without its time attribute
    assert out["pretrain/epoch"] == 2 and out["pretrain/loss"] == 0.05 and out["pretrain/time/epoch_s"] == 3.0
    assert math.isnan(out[schema.M_VAL_MAUC]) and out[PHASE_KEY] == "pretrain"


def test_finetune_reports_pass_through_with_the_pretraining_cost_added():
    from thoraxmae.study.run.trial import phase_metrics

    report = {"epoch": 1, "val/mauc": 0.7, "cost/cpu_hours": 0.5}
    out = phase_metrics(report, "finetune", schema.M_VAL_MAUC, pipeline=True,
                        cost_offset={"cost/cpu_hours": 0.25})
    assert out["epoch"] == 1 and out["val/mauc"] == 0.7 and out["cost/cpu_hours"] == 0.75
    alone = phase_metrics(report, "finetune", schema.M_VAL_MAUC, pipeline=False, cost_offset={})
    assert alone == {**report, "phase": "finetune"}


@pytest.mark.parametrize("epochs, last, status", [
    (4, {"epoch": 4, "phase": "finetune"}, schema.STATUS_COMPLETED),
    (4, {"epoch": 2, "phase": "finetune"}, schema.STATUS_PRUNED),
    (6, {"epoch": 4, "phase": "finetune"}, schema.STATUS_PRUNED),
    (2, {"epoch": 2, "phase": "finetune"}, schema.STATUS_COMPLETED),
    (4, {"pretrain/epoch": 2, "phase": "pretrain"}, schema.STATUS_PRUNED),
])
def test_trial_status_compares_the_scored_epochs(pipeline_spec, epochs, last, status):
    from thoraxmae.study.spec.plan import TrialPlan
    from thoraxmae.study.tracking.callback import trial_status

    assert trial_status(TrialPlan.from_config(pipeline_spec, {"finetune.epochs": epochs}), last) == status

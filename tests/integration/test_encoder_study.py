"""The paper's Table 1 as one `finetune` study: `finetune.init` searched as a categorical knob over two
encoders saved in different formats (the paper's released MAE dict, a timm state dict), each covered by
the coverage rule, each with its fine-tuning knobs tuned; the report compares the encoders (real local Ray,
real SQLite MLflow, real files)."""
from __future__ import annotations

import argparse
from collections import Counter

import pytest
import torch

from tests.integration.study_helpers import tiny_spec, trial_runs, write_spec
from thoraxmae.study import schema
from thoraxmae.study.spec.load import load_spec
from thoraxmae.trainers.config import ModelConfig
from thoraxmae.trainers.models import build_classifier, build_mae

pytestmark = pytest.mark.integration


def test_encoder_study_over_two_checkpoint_formats(study_ray, phantom_store, tmp_path):
    from thoraxmae.analysis.report import build_report
    from thoraxmae.study.run.tune import run_study

    tiny = ModelConfig(name="vit_tiny_test", img_size=64, patch_size=8, depth=2)
    torch.manual_seed(0)
    xray = tmp_path / "vit-tiny_xray_mae.pth"  # the paper's released layout, with its argparse args
    torch.save({"model": build_mae(tiny).state_dict(), "optimizer": {}, "epoch": 1, "scaler": {},
                "args": argparse.Namespace(model="mae_vit_tiny")}, xray)
    imagenet = tmp_path / "vit-tiny_imagenet.pth"  # a plain timm state dict
    torch.save(build_classifier(tiny, 1000, 0.0).state_dict(), imagenet)

    raw = tiny_spec(phantom_store, tmp_path, "encoders", num_samples=4, concurrent=2)
    raw["finetune"]["epochs"] = 2
    raw["search"]["scheduler"] = {"type": "none"}
    raw["search"]["coverage"] = 2
    raw["search"]["space"] = {"finetune.init": {"type": "categorical", "choices": [xray.name, imagenet.name]},
                              "finetune.layer_decay": {"type": "float", "low": 0.5, "high": 0.9}}
    spec = load_spec(write_spec(raw, tmp_path / "spec.yaml"))  # choices are relative to the spec file
    grid = run_study(spec)

    assert len(grid) == 4 and not grid.errors
    runs = trial_runs(spec.tracking.uri, "encoders")
    assert Counter(r.data.params["finetune.init"] for r in runs) == {str(xray): 2, str(imagenet): 2}
    assert {r.data.tags[schema.TAG_STATUS] for r in runs} == {schema.STATUS_COMPLETED}

    md = build_report("encoders", spec.tracking.uri, tmp_path / "report", n_bootstrap=4,
                      log_artifacts=False).markdown.read_text()
    assert xray.name in md and imagenet.name in md

"""Every shipped spec in configs/ validates (the data stores live elsewhere, so they are not checked)."""
from __future__ import annotations

from pathlib import Path

import pytest

from thoraxmae.study import schema
from thoraxmae.study.spec.coverage import study_points
from thoraxmae.study.spec.load import load_spec

CONFIGS = sorted((Path(__file__).parents[3] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_spec_validates(path):
    spec = load_spec(path, check_files=False)
    assert spec.name and spec.phases


def test_study_configs_start_from_the_paper_recipe():
    for name in ("demo.yaml", "paper-finetune-study.yaml", "paper-pipeline-study.yaml"):
        spec = load_spec(Path(__file__).parents[3] / "configs" / name, check_files=False)
        first = study_points(spec)[0]
        assert first == {k: schema.PAPER_RECIPE[k] for k in spec.search.space}, name
        assert spec.search.scheduler.type == "asha" and spec.metric == schema.M_VAL_MAUC


def test_single_run_configs_carry_the_papers_exact_values():
    root = Path(__file__).parents[3] / "configs"
    pre = load_spec(root / "paper-pretrain.yaml", check_files=False).pretrain
    fin = load_spec(root / "paper-finetune.yaml", check_files=False).finetune
    assert (pre.epochs, pre.warmup_epochs, pre.blr, pre.mask_ratio, pre.crop_min, pre.norm_pix_loss) == \
        (800, 40, 1.5e-4, 0.9, 0.5, False)
    assert (fin.epochs, fin.warmup_epochs, fin.blr, fin.min_lr, fin.layer_decay, fin.drop_path,
            fin.randaug_magnitude, fin.crop_min) == (75, 5, 2.5e-4, 1e-5, 0.55, 0.2, 6, 0.08)

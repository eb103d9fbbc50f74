"""Knob facts have one source, the typed configs' `knob()`/`setting()` fields; every view is derived."""
from __future__ import annotations

from thoraxmae.study import schema
from thoraxmae.study.spec.space import NOT_SEARCHABLE, split_knob


def test_paper_recipe_is_the_papers_vit_s_values():
    # docs/paper.md: pre-training mask 0.9, crop 0.5-1, blr 1.5e-4, wd 0.05, norm-pix off; fine-tuning LLRD
    # 0.55,
    # RandAug m6, DropPath 0.2, blr 2.5e-4, timm crop 0.08-1, wd 0.05
    assert schema.PAPER_RECIPE == {
        "pretrain.mask_ratio": 0.9, "pretrain.crop_min": 0.5, "pretrain.blr": 1.5e-4,
        "pretrain.weight_decay": 0.05, "pretrain.norm_pix_loss": False,
        "finetune.layer_decay": 0.55, "finetune.randaug_magnitude": 6, "finetune.drop_path": 0.2,
        "finetune.blr": 2.5e-4, "finetune.crop_min": 0.08, "finetune.weight_decay": 0.05}


def test_knob_lists_and_labels_come_from_the_fields():
    assert "pretrain.mask_ratio" in schema.PRETRAIN_KNOBS and "finetune.epochs" in schema.FINETUNE_KNOBS
    assert "finetune.max_steps_per_epoch" not in schema.KNOWN_KNOBS
    # the range is the field's own bound (le=10), so the label cannot drift from the validation
    assert (schema.knob_label("finetune.randaug_magnitude")
            == "finetune.randaug_magnitude (RandAug magnitude, 0-10)")
    assert schema.knob_label("pretrain.mask_ratio") == "pretrain.mask_ratio (fraction of patches masked)"
    assert schema.knob_label("finetune.unknown") == "finetune.unknown"


def test_settings_are_not_searchable_but_the_encoder_is():
    assert {"bootstrap", "max_steps_per_epoch", "checkpoint_every", "init_format"} <= NOT_SEARCHABLE
    assert split_knob("finetune.init") == ("finetune", "init")

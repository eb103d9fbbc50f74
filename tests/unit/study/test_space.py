"""Search-space syntax -> Optuna distributions, and a trial's config -> typed phase configs."""
from __future__ import annotations

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from pydantic import TypeAdapter, ValidationError

from thoraxmae.study.spec.space import KnobSpace, apply_knobs, knob_values, split_knob, to_optuna_space
from thoraxmae.trainers.config import FinetuneConfig, PretrainConfig

_adapter = TypeAdapter(KnobSpace)


def test_spaces_become_optuna_distributions():
    space = {
        "finetune.layer_decay": _adapter.validate_python({"type": "float", "low": 0.4, "high": 0.9}),
        "finetune.blr": _adapter.validate_python({"type": "float", "low": 1e-4, "high": 1e-3, "log": True}),
        "finetune.randaug_magnitude": _adapter.validate_python({"type": "int", "low": 0, "high": 12,
                                                                "step": 3}),
        "pretrain.mask_ratio": _adapter.validate_python({"type": "categorical", "choices": [0.75, 0.9]}),
    }
    dists = to_optuna_space(space)
    assert dists["finetune.layer_decay"] == FloatDistribution(0.4, 0.9)
    assert dists["finetune.blr"] == FloatDistribution(1e-4, 1e-3, log=True)
    assert dists["finetune.randaug_magnitude"] == IntDistribution(0, 12, step=3)
    assert dists["pretrain.mask_ratio"] == CategoricalDistribution((0.75, 0.9))


def test_space_checks_report_the_bad_part():
    assert _adapter.validate_python({"type": "float", "low": 0.9, "high": 0.4}).check()[0][0] == "high"
    assert _adapter.validate_python({"type": "int", "low": 0, "high": 4, "log": True}).check()[0][0] == "low"
    assert _adapter.validate_python({"type": "categorical", "choices": [1, 1]}).check()[0][0] == "choices"
    with pytest.raises(ValidationError):
        _adapter.validate_python({"type": "categorical", "choices": []})


def test_contains_respects_type_and_range():
    f = _adapter.validate_python({"type": "float", "low": 0.0, "high": 0.3})
    i = _adapter.validate_python({"type": "int", "low": 0, "high": 10})
    c = _adapter.validate_python({"type": "categorical", "choices": [0.75, 0.9]})
    assert f.contains(0.3) and not f.contains(0.31)
    assert i.contains(10) and not i.contains(True) and not i.contains(2.5)
    assert c.contains(0.9) and not c.contains(0.8)


@pytest.mark.parametrize("knob, match", [
    ("mask_ratio", "not a knob"), ("finetune.drop_paht", "not a finetune knob"),
    ("finetune.init_format", "not a finetune knob"), ("model.depth", "not a knob"),
    ("pretrain.a.b", "not a knob"),
])
def test_split_knob_rejects_non_knobs(knob, match):
    with pytest.raises(ValueError, match=match):
        split_knob(knob)


def test_knob_values_accepts_flat_or_nested_and_unwraps_numpy():
    knobs = frozenset({"finetune.drop_path", "pretrain.mask_ratio"})
    flat = knob_values({"finetune.drop_path": np.float64(0.1), "pretrain.mask_ratio": 0.9}, knobs)
    nested = knob_values({"finetune": {"drop_path": 0.1}, "pretrain": {"mask_ratio": 0.9}}, knobs)
    assert flat == nested == {"finetune.drop_path": 0.1, "pretrain.mask_ratio": 0.9}
    assert type(flat["finetune.drop_path"]) is float
    with pytest.raises(KeyError, match="finetune.drop_path"):
        knob_values({"pretrain.mask_ratio": 0.9}, knobs)


def test_apply_knobs_sets_only_its_phase_and_validates():
    values = {"finetune.drop_path": 0.1, "pretrain.mask_ratio": 0.75}
    ft = apply_knobs(FinetuneConfig(epochs=3, warmup_epochs=1), "finetune", values)
    pt = apply_knobs(PretrainConfig(epochs=3, warmup_epochs=1), "pretrain", values)
    assert (ft.drop_path, ft.epochs, pt.mask_ratio, pt.crop_min) == (0.1, 3, 0.75, 0.5)
    with pytest.raises(ValidationError, match="mask_ratio"):
        apply_knobs(PretrainConfig(epochs=3, warmup_epochs=1), "pretrain", {"pretrain.mask_ratio": 1.5})

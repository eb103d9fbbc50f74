"""thoraxmae.analysis.tables: MLflow records -> the tidy trial and curve tables; knob kinds."""
import math

import numpy as np
import pandas as pd
import pytest

from thoraxmae.analysis.load import StudyRecord, TrialRecord, objective_of
from thoraxmae.analysis.tables import (
    curve_table,
    knob_infos,
    max_epochs_of,
    numeric_matrix,
    parse_value,
    scored_trials,
    trial_table,
)
from thoraxmae.study import schema


def _record(trials, mode="max", metric=schema.M_VAL_MAUC, spec=None, knobs=("finetune.drop_path",)):
    spec = spec or {"stage": "finetune", "finetune": {"epochs": 8}}
    return StudyRecord(name="s", tracking_uri="memory://", experiment_id="0", parent_run_id=None, spec=spec,
                       stage=spec["stage"], metric=metric, mode=mode, knobs=knobs, space={}, trials=trials)


def _trial(tid, status, curve, params=None, metrics=None, start=1000.0):
    history = {schema.M_VAL_MAUC: list(enumerate(curve, start=1))}
    return TrialRecord(f"run-{tid}", tid, status, start, start + 60, params or {"finetune.drop_path": "0.1"},
                       metrics or {}, history)


def test_parse_value_restores_logged_python_types():
    assert parse_value("True") is True and parse_value("False") is False
    assert parse_value("6") == 6 and isinstance(parse_value("6"), int)
    assert parse_value("1e-05") == pytest.approx(1e-5)
    assert parse_value("0.75") == 0.75
    assert parse_value("vit_tiny_test") == "vit_tiny_test"


def test_trial_table_objective_is_best_epoch_and_statuses_survive():
    trials = [_trial("a", schema.STATUS_COMPLETED, [0.70, 0.78, 0.76],
                     metrics={schema.M_COST_CPU_HOURS: 0.3}),
              _trial("b", schema.STATUS_PRUNED, [0.60, 0.65], start=1001),
              _trial("c", schema.STATUS_FAILED, [], start=1002),
              _trial("d", schema.STATUS_RUNNING, [0.72], start=1003)]
    df = trial_table(_record(trials)).set_index("trial_id")
    assert df.loc["a", "objective"] == 0.78 and df.loc["a", "objective_final"] == 0.76
    assert df.loc["a", "best_epoch"] == 2 and df.loc["a", "epochs_run"] == 3
    assert df.loc["b", "epochs_run"] == 2 and df.loc["b", "max_epochs"] == 8
    assert math.isnan(df.loc["c", "objective"]) and df.loc["c", "epochs_run"] == 0
    assert df.loc["a", "cost_hours"] == 0.3 and df.loc["a", "cost_unit"] == "CPU-hours"
    assert df["finetune.drop_path"].dtype == "float64"
    assert list(scored_trials(df.reset_index())["trial_id"]) == ["a", "b"]  # failed and running left out


def test_trial_table_min_mode_takes_the_lowest_epoch():
    df = trial_table(_record([_trial("a", schema.STATUS_COMPLETED, [0.5, 0.3, 0.4])], mode="min"))
    assert df.loc[0, "objective"] == 0.3 and df.loc[0, "best_epoch"] == 2


def test_curve_table_has_one_row_per_epoch():
    curves = curve_table(_record([_trial("a", schema.STATUS_COMPLETED, [0.7, 0.8]),
                                  _trial("b", schema.STATUS_FAILED, [])]))
    assert curves[["trial_id", "epoch", "value"]].values.tolist() == [["a", 1, 0.7], ["a", 2, 0.8]]


def test_max_epochs_capped_by_asha_max_t():
    spec = {"stage": "finetune", "finetune": {"epochs": 75},
            "search": {"scheduler": {"type": "asha", "max_t": 30}}}
    rec = _record([], spec=spec)
    assert max_epochs_of(rec, _trial("a", schema.STATUS_PRUNED, [], params={"finetune.epochs": "75"})) == 30
    rec.spec["search"]["scheduler"]["type"] = "none"
    assert max_epochs_of(rec, _trial("a", schema.STATUS_PRUNED, [], params={"finetune.epochs": "75"})) == 75


def test_knob_infos_infer_kind_and_log_scale():
    df = pd.DataFrame({"finetune.blr": [1e-5, 3e-4, 1e-3], "finetune.drop_path": [0.01, 0.2, 0.5],
                       "finetune.randaug_magnitude": pd.array([0, 6, 12], dtype="Int64"),
                       "pretrain.mask_ratio": [0.75, 0.9, 0.9], "pretrain.norm_pix_loss": [True, False, True],
                       "finetune.weight_decay": [0.05, 0.05, 0.05]})
    space = {"pretrain.mask_ratio": {"type": "categorical", "choices": [0.75, 0.9]}}
    infos = {i.name: i for i in knob_infos(df, tuple(df.columns), space)}
    assert infos["finetune.blr"].kind == "float" and infos["finetune.blr"].log  # 2 decades
    assert not infos["finetune.drop_path"].log  # 1.7 decades
    assert infos["finetune.randaug_magnitude"].kind == "int"
    assert infos["pretrain.mask_ratio"].kind == "categorical" and infos["pretrain.mask_ratio"].numeric
    assert infos["pretrain.mask_ratio"].choices == (0.75, 0.9)
    assert (infos["pretrain.norm_pix_loss"].kind == "categorical"
            and not infos["pretrain.norm_pix_loss"].numeric)
    assert not infos["finetune.weight_decay"].varied
    x = numeric_matrix(df, [infos["finetune.blr"], infos["pretrain.norm_pix_loss"]])
    np.testing.assert_allclose(x[:, 0], np.log10([1e-5, 3e-4, 1e-3]))
    assert x[:, 1].tolist() == [1.0, 0.0, 1.0]  # choices sorted (False, True)


def test_objective_defaults_follow_the_spec_then_the_stage():
    assert objective_of({"search": {"metric": "val/acc"}}, {}, "finetune") == ("val/acc", "max")
    assert objective_of(None, {}, "finetune") == (schema.M_VAL_MAUC, "max")
    assert objective_of(None, {}, "pretrain") == (schema.M_PRETRAIN_LOSS, "min")
    assert (objective_of({}, {"search.metric": "val/mauc", "search.mode": "min"}, "finetune")
            == ("val/mauc", "min"))

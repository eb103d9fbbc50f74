"""thoraxmae.analysis.recipe (top-k recipe, spec, reference comparison) and analysis.cost on hand-made
tables."""
import math

import numpy as np
import pandas as pd
import pytest

from thoraxmae.analysis.claims import search_statements
from thoraxmae.analysis.cost import cost_summary, pareto_mask
from thoraxmae.analysis.recipe import compare_reference, distill_recipe, recipe_spec
from thoraxmae.analysis.tables import KnobInfo
from thoraxmae.study import schema

INFOS = [KnobInfo("finetune.layer_decay", "float", low=0.4, high=0.9),
         KnobInfo("finetune.randaug_magnitude", "int", low=0, high=12),
         KnobInfo("finetune.blr", "float", log=True, low=1e-5, high=1e-2),
         KnobInfo("pretrain.mask_ratio", "categorical", choices=(0.75, 0.9))]


def _scored(n_completed=10, with_ci=True):
    rows = []
    for i in range(n_completed):  # trial i has objective 0.80 - 0.01 i: t0 is best
        rows.append({"trial_id": f"t{i}", "run_id": f"r{i}", "status": schema.STATUS_COMPLETED,
                     "objective": 0.80 - 0.01 * i, "objective_final": 0.80 - 0.01 * i,
                     "finetune.layer_decay": 0.5 + 0.02 * i,
                     "finetune.randaug_magnitude": [3, 4, 8, 12][i % 4],
                     "finetune.blr": [1e-4, 1e-3, 1e-2][i % 3],
                     "pretrain.mask_ratio": [0.9, 0.75, 0.9][i % 3],
                     schema.M_TEST_MAUC: 0.79 - 0.01 * i,
                     schema.M_TEST_MAUC_CI_LOW: 0.78 - 0.01 * i if with_ci else np.nan,
                     schema.M_TEST_MAUC_CI_HIGH: 0.80 - 0.01 * i if with_ci else np.nan,
                     "cost_hours": 1.0, "cost_unit": "GPU-hours", "epochs_run": 10.0, "max_epochs": 10.0})
    rows.append({**rows[-1], "trial_id": "p0", "status": schema.STATUS_PRUNED, "objective": 0.9,
                 "cost_hours": 0.2, "epochs_run": 2.0})  # pruned: never in the top-k while 3 completed exist
    return pd.DataFrame(rows)


def test_top_k_recipe_values_and_spread():
    r = distill_recipe(_scored(), INFOS, "max", top_fraction=0.2, min_k=3, n_bootstrap=200)
    assert list(r.top["trial_id"]) == ["t0", "t1", "t2"]  # k = max(3, ceil(0.2 * 10)); pruned p0 excluded
    ld, ra, blr, mr = r.knobs
    assert ld.value == pytest.approx(0.52) and (ld.low, ld.high) == (0.5, 0.54)
    assert ra.value == 4 and isinstance(ra.value, int) and (ra.low, ra.high) == (3, 8)
    assert blr.value == pytest.approx(1e-3)  # geometric median of 1e-4, 1e-3, 1e-2
    assert mr.value == 0.9 and mr.share == pytest.approx(2 / 3)
    assert r.best.trial_id == "t0" and r.best.params["finetune.layer_decay"] == 0.5
    assert r.confidence.k == 3 and r.confidence.pool == "completed" and r.confidence.n_scored == 11


def test_confidence_compares_best_gap_with_test_ci():
    c = distill_recipe(_scored(), INFOS, "max", n_bootstrap=200).confidence
    assert c.best_gap == pytest.approx(0.01) and c.noise == pytest.approx(0.01)  # t0 vs t1, not the pruned p0
    assert c.best_beyond_noise is False  # 0.01 is not more than the CI half-width 0.01
    assert c.topk_mean == pytest.approx(0.79) and c.topk_ci[0] <= 0.79 <= c.topk_ci[1]
    c = distill_recipe(_scored(with_ci=False), INFOS, "max", n_bootstrap=200).confidence
    assert c.best_beyond_noise is None
    assert "cannot be compared" in search_statements(c, "val/mauc")[-1]


def test_no_circular_top_k_versus_rest_claim():
    """The top-k are selected by their scores: top-k mean minus the rest's mean is positive by
    construction, so the recipe never states it."""
    c = distill_recipe(_scored().iloc[:-1], INFOS, "max", n_bootstrap=200).confidence
    assert not hasattr(c, "diff_ci") and not hasattr(c, "rest_mean")
    text = " ".join(search_statements(c, "val/mauc"))
    assert "other trials" not in text and "exceeds the noise" not in text
    assert ("Search scores of the top 3: mean `val/mauc` 0.7900 (95% bootstrap CI" in text
            and "They are the scores these trials were selected by: expect less when the recipe is "
                "re-run." in text)


def test_few_completed_trials_fall_back_to_scored():
    scored = _scored(n_completed=2)
    r = distill_recipe(scored, INFOS, "max", min_k=3, n_bootstrap=50)
    assert r.confidence.pool == "scored" and r.confidence.k == 3 and r.best.trial_id == "p0"


def test_min_mode_ranks_lowest_first():
    r = distill_recipe(_scored().iloc[:-1], INFOS, "min", min_k=3, n_bootstrap=50)
    assert list(r.top["trial_id"]) == ["t9", "t8", "t7"]


def test_recipe_spec_fixes_knobs_and_drops_search():
    r = distill_recipe(_scored(), INFOS, "max", n_bootstrap=50)
    spec = {"name": "s", "stage": "pipeline", "finetune": {"epochs": 75, "layer_decay": 0.75},
            "search": {"space": {}}, "tracking": {"experiment": "s"}}
    out = recipe_spec(spec, r, "pipeline")
    assert "search" not in out and out["stage"] == "pipeline" and out["finetune"]["epochs"] == 75
    assert out["finetune"]["layer_decay"] == pytest.approx(0.52) and out["pretrain"]["mask_ratio"] == 0.9
    assert "search" in spec  # the study's spec is not modified
    assert recipe_spec(None, r, "finetune")["stage"] == "finetune"


def test_compare_reference_agree_and_differences():
    r = distill_recipe(_scored(), INFOS, "max", n_bootstrap=50)
    rows = {x.knob: x for x in compare_reference(r, {"finetune.layer_decay": 0.55, "finetune.blr": 2.5e-4,
                                                     "pretrain.mask_ratio": 0.9})}
    ld = rows["finetune.layer_decay"]
    assert (ld.agrees is False and ld.diff == pytest.approx(-0.03)
            and ld.rel_diff == pytest.approx(-0.03 / 0.55))
    assert "outside the top-k range" in ld.verdict
    assert rows["finetune.blr"].agrees is True  # 2.5e-4 inside 1e-4..1e-2
    assert rows["pretrain.mask_ratio"].agrees is True and math.isnan(rows["pretrain.mask_ratio"].diff)
    assert rows["finetune.randaug_magnitude"].agrees is None


def test_pareto_mask_max_and_min():
    cost = np.array([1.0, 2.0, 3.0, 4.0])
    assert pareto_mask(cost, np.array([0.5, 0.4, 0.7, 0.7]), "max").tolist() == [True, False, True, False]
    assert pareto_mask(cost, np.array([0.5, 0.4, 0.7, 0.3]), "min").tolist() == [True, True, False, True]


def test_asha_savings_price_missing_epochs_at_the_trials_own_rate():
    trials = _scored(n_completed=3)
    s = cost_summary(trials, trials, "max")
    assert s.n_pruned == 1 and s.epochs_run_pruned == 2 and s.epochs_max_pruned == 10
    assert s.cost_saved == pytest.approx(8 * 0.2 / 2)  # 8 epochs at 0.1 GPU-hours each
    assert s.total == pytest.approx(3.2) and s.saved_fraction == pytest.approx(0.8 / 4.0)
    assert s.unit == "GPU-hours" and s.front == ["p0"]  # cheapest and best


def test_load_reference_flat_or_by_section(tmp_path):
    from thoraxmae.analysis.errors import ReportError
    from thoraxmae.analysis.recipe import load_reference

    flat = tmp_path / "flat.yaml"
    flat.write_text("finetune.layer_decay: 0.65\npretrain.mask_ratio: 0.75\n")
    assert load_reference(flat) == {"finetune.layer_decay": 0.65, "pretrain.mask_ratio": 0.75}
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\nfinetune: {layer_decay: 0.7, drop_path: 0.1}\nsearch: {space: {}}\n")
    assert load_reference(spec) == {"finetune.layer_decay": 0.7, "finetune.drop_path": 0.1}
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n")
    with pytest.raises(ReportError, match="bad.yaml"):
        load_reference(bad)


def test_pretraining_knobs_are_recommended_as_one_recipe_a_top_trial_used():
    """Per-knob modes would give mask 0.75 (3 of 5) with crop 0.2 (2 of 5): a combination no top trial
    fine-tuned from. The joint choice is the best-ranked most common combination, here the best's."""
    infos = [KnobInfo("pretrain.mask_ratio", "categorical", choices=(0.6, 0.75, 0.9)),
             KnobInfo("pretrain.crop_min", "categorical", choices=(0.2, 0.3, 0.5, 0.8)),
             KnobInfo("finetune.layer_decay", "float", low=0.4, high=0.9)]
    combos = [(0.75, 0.5), (0.75, 0.8), (0.9, 0.2), (0.6, 0.2), (0.75, 0.3)]
    scored = pd.DataFrame([{"trial_id": f"t{i}", "run_id": f"r{i}", "status": schema.STATUS_COMPLETED,
                            "objective": 0.8 - 0.01 * i, "pretrain.mask_ratio": m, "pretrain.crop_min": c,
                            "finetune.layer_decay": 0.5 + 0.05 * i, schema.M_TEST_MAUC: 0.7,
                            schema.M_TEST_MAUC_CI_LOW: 0.69, schema.M_TEST_MAUC_CI_HIGH: 0.71}
                           for i, (m, c) in enumerate(combos)])
    r = distill_recipe(scored, infos, "max", top_fraction=1.0, min_k=5, n_bootstrap=0)
    mask, crop, ld = r.knobs
    assert (mask.value, crop.value) == (0.75, 0.5) and (mask.value, crop.value) in combos
    assert (mask.share, crop.share) == (0.6, 0.2) and ld.value == pytest.approx(0.6)
    combos[3] = (0.9, 0.2)  # now (0.9, 0.2) is the most common combination (2 of 5)
    scored["pretrain.mask_ratio"], scored["pretrain.crop_min"] = zip(*combos, strict=True)
    mask, crop, _ = distill_recipe(scored, infos, "max", top_fraction=1.0, min_k=5, n_bootstrap=0).knobs
    assert (mask.value, crop.value) == (0.9, 0.2) and (mask.share, crop.share) == (0.4, 0.4)

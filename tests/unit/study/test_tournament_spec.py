"""search.tournament: one-line spec errors before Ray starts, the recipes and paired scoring points, the
cut."""
from __future__ import annotations

import pytest

from thoraxmae.study.errors import SpecError
from thoraxmae.study.run.bracket import decide, paired_ci
from thoraxmae.study.spec.load import parse_spec
from thoraxmae.study.spec.tournament_plan import alive_counts, planned_epochs, recipes, scoring_points


def raw(**tournament) -> dict:
    return {"name": "t", "stage": "pipeline", "data": {"store": "/tmp/store"},
            "model": {"name": "vit_tiny_test"},
            "pretrain": {"epochs": 4, "warmup_epochs": 1, "schedule": "constant"},
            "finetune": {"epochs": 3, "warmup_epochs": 1},
            "search": {"scheduler": {"type": "none"},
                       "space": {"pretrain.mask_ratio": {"type": "categorical", "choices": [0.75, 0.9]},
                                 "pretrain.crop_min": {"type": "categorical", "choices": [0.2, 0.5]},
                                 "finetune.layer_decay": {"type": "float", "low": 0.5, "high": 0.9}},
                       "tournament": {"rungs": [1, 2, 4], "keep": 0.5, "scoring": {"trials": 3},
                                      **tournament}}}


def test_a_valid_tournament_spec_has_its_recipes_and_paired_points():
    spec = parse_spec(raw())
    rs = recipes(spec)
    # the paper's first
    assert len(rs) == 4 and rs[0] == {"pretrain.crop_min": 0.5, "pretrain.mask_ratio": 0.9}
    points = scoring_points(spec)
    assert [p["finetune.seed"] for p in points] == [1000, 1001, 1002]
    assert points[0]["finetune.layer_decay"] == 0.55  # the paper's fine-tuning point first
    assert all(0.5 <= p["finetune.layer_decay"] <= 0.9 for p in points[1:])
    assert scoring_points(spec) == points  # drawn once, from the scoring seed


@pytest.mark.parametrize(("change", "match"), [
    ({"rungs": [2, 1, 4]}, r"search.tournament.rungs=\[2, 1, 4\]: must be increasing"),
    ({"rungs": [1, 2]}, r"search.tournament.rungs=\[1, 2\]: the last rung must be pretrain.epochs=4"),
    ({"keep": 1.0}, r"search.tournament.keep=1.0: must be in \(0, 1\)"),
    ({"keep": 0}, r"search.tournament.keep=0"),
    ({"scoring": {"trials": 1}}, r"search.tournament.scoring.trials=1: at least 2"),
])
def test_bad_tournaments_are_one_line_errors_naming_the_field(change, match):
    with pytest.raises(SpecError, match=match):
        parse_spec(raw(**change))


def test_cosine_outside_pipeline_and_one_recipe_are_refused():
    cosine = raw()
    cosine["pretrain"]["schedule"] = "cosine"
    with pytest.raises(SpecError, match="pretrain.schedule=cosine: a tournament continues pre-trainings"):
        parse_spec(cosine)
    one = raw()
    one["search"]["space"]["pretrain.mask_ratio"]["choices"] = [0.9]
    one["search"]["space"]["pretrain.crop_min"]["choices"] = [0.5]
    with pytest.raises(SpecError, match="search.space: a tournament needs at least 2 pre-training recipes"):
        parse_spec(one)
    ft = {"name": "t", "stage": "finetune", "data": {"store": "/tmp/store"},
          "finetune": {"epochs": 3, "warmup_epochs": 1},
          "search": {"tournament": {"rungs": [1]}}}
    with pytest.raises(SpecError, match="search.tournament: only a pipeline study runs a tournament"):
        parse_spec(ft)


def test_planned_epochs_follow_successive_halving():
    assert alive_counts(6, [50, 100, 200, 400, 800], 0.5) == [6, 3, 2, 1, 1]
    assert planned_epochs(6, [50, 100, 200, 400, 800], 0.5) == 1250  # docs/paper.md: 1.56 pre-trainings
    assert planned_epochs(4, [1, 2], 0.5) == 6 and planned_epochs(4, [1, 2, 4], 0.5) == 8


def test_the_cut_keeps_the_top_half_and_exact_ties():
    labels = {i: f"r{i}" for i in range(4)}
    s = decide({0: [0.70, 0.72], 1: [0.60, 0.61], 2: [0.65, 0.66], 3: [0.50, 0.52]}, labels, 0.5)
    assert ([x.recipe for x in s] == ["r0", "r2", "r1", "r3"]
            and [x.kept for x in s] == [True, True, False, False])
    assert s[0].diff_to_leader == 0 and s[1].diff_to_leader == pytest.approx(-0.055)
    tied = decide({0: [0.7, 0.7], 1: [0.6, 0.6], 2: [0.6, 0.6], 3: [0.5, 0.5]}, labels, 0.5)
    assert [x.recipe for x in tied if x.kept] == ["r0", "r1", "r2"]  # r1 and r2 tie at the cut: both go on
    close = decide({0: [0.7, 0.5], 1: [0.6, 0.61], 2: [0.59, 0.62], 3: [0.1, 0.1]}, labels, 0.5)
    assert any(x.close for x in close if not x.kept)
    mean, low, high = paired_ci([1.0, 2.0, 3.0], [0.0, 1.0, 1.0])
    assert mean == pytest.approx(4 / 3) and low < mean < high  # scipy's t-interval over the 3 pairs


def test_the_paper_tournament_config_is_the_papers_length_at_about_one_and_a_half_pretrainings():
    from pathlib import Path

    from thoraxmae.study.spec.load import load_spec

    spec = load_spec(Path(__file__).parents[3] / "configs" / "paper-tournament-study.yaml", check_files=False)
    t = spec.search.tournament
    assert (spec.model.name == "vit_small_patch16" and spec.pretrain.epochs == t.rungs[-1] == 800
            and t.rungs[0] == 50)
    rs = recipes(spec)
    # the paper's, first
    assert len(rs) >= 6 and rs[0] == {"pretrain.crop_min": 0.5, "pretrain.mask_ratio": 0.9}
    assert planned_epochs(len(rs), t.rungs, t.keep) == 1250  # 1.56 x 800, before scoring
    assert scoring_points(spec)[0]["finetune.layer_decay"] == 0.55

"""The "Pre-training recipes" section: pipeline studies with pre-training reuse (one of them reusing another
study's pre-training), an encoder study and studies that vary neither, written into a real SQLite MLflow
with planted numbers; every figure is checked against its hand computation."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from tests.unit.analysis import reuse_synthetic as rs
from tests.unit.analysis import synthetic as syn
from thoraxmae.analysis.analyze import AnalysisOptions, analyze
from thoraxmae.analysis.confirm import Confirmation
from thoraxmae.analysis.load import load_study
from thoraxmae.analysis.pretrain_section import (
    CONFIRMED,
    EXPLORATORY,
    pair_text,
    pretraining_section,
    reuse_text,
)
from thoraxmae.analysis.pretraining import encoder_labels
from thoraxmae.analysis.render import _inline
from thoraxmae.analysis.report import build_report
from thoraxmae.study import schema

MASK, CROP = rs.MASK, rs.CROP
P90_50 = rs.Pretraining("k90-50", 0.9, 0.5, loss=0.30, hours=0.05)
P75_50 = rs.Pretraining("k75-50", 0.75, 0.5, loss=0.25, hours=0.06)
P90_20 = rs.Pretraining("k90-20", 0.9, 0.2, loss=0.31, hours=0.05)
P75_20 = rs.Pretraining("k75-20", 0.75, 0.2, loss=0.26, hours=0.05)
SCORES = {"k90-50": [0.712, 0.705, 0.700, 0.690], "k75-50": [0.698, 0.690], "k90-20": [0.650, 0.645, 0.640],
          "k75-20": [0.640]}
OTHER = rs.Pretraining("k2-75-50", 0.75, 0.5, loss=0.24, hours=0.07)  # the second study's own pre-training
ENCODERS = {"/ckpt/imagenet/vit_s.pth": [0.70, 0.69], "/ckpt/xray/vit_s.pth": [0.72, 0.71, 0.715],
            "/ckpt/mae_xray.pt": [0.705]}
OPTIONS = AnalysisOptions(n_bootstrap=2, n_bootstrap_means=20)


def _recipe_trials() -> list[rs.Trial]:
    """10 scored trials over 4 recipes (one pruned: 2 epochs) and a failed one of the paper's recipe."""
    trials, i = [], 0
    for key, scores in SCORES.items():
        for n, score in enumerate(scores):
            status = schema.STATUS_PRUNED if (key, n) == ("k90-50", 3) else schema.STATUS_COMPLETED
            trials.append(rs.Trial(f"t{i:02d}", key, score, status))
            i += 1
    return [*trials, rs.Trial("t99", "k90-50", 0.0, schema.STATUS_FAILED)]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("reuse")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    recipes = rs.write(uri, root, "recipes", [P90_50, P75_50, P90_20, P75_20], _recipe_trials())
    reuser_space = {MASK: rs.PIPELINE_SPACE[MASK]}
    rs.write(uri, root, "reuser", [OTHER],
             [rs.Trial("r0", "k90-50", 0.72), rs.Trial("r1", "k90-50", 0.715),
              rs.Trial("r2", "k2-75-50", 0.70), rs.Trial("r3", "k2-75-50", 0.69)],
             reused={"k90-50": (P90_50, recipes.pretrain_runs["k90-50"])},
             parent_metrics={"cost/pretrain_cpu_hours": 0.071, "cost/pretrain_cpu_hours_no_reuse": 0.242},
             study_spec=rs.spec("reuser", space=reuser_space))
    enc_space = {rs.INIT: {"type": "categorical", "choices": list(ENCODERS)},
                 "finetune.layer_decay": {"type": "float", "low": 0.4, "high": 1.0}}
    enc = [rs.Trial(f"e{i}", None, s, params={rs.INIT: path})
           for i, (path, s) in enumerate((p, s) for p, scores in ENCODERS.items() for s in scores)]
    rs.write(uri, root, "encoders", [], enc, study_spec=rs.spec("encoders", "finetune", enc_space))
    self_trained = [rs.Trial(f"s{i}", None, s, recipe=r)
                    for i, (r, s)
                    in enumerate([(P90_50, 0.71), (P90_50, 0.70), (P75_50, 0.69), (P75_50, 0.68)])]
    rs.write(uri, root, "selftrained", [], self_trained)
    rs.write(uri, root, "dangling", [], [rs.Trial("d0", "kx", 0.7), rs.Trial("d1", "kx", 0.69)],
             reused={"kx": (P90_50, "0123456789abcdef0123456789abcdef")})
    plain_space = {"finetune.layer_decay": {"type": "float", "low": 0.4, "high": 1.0}}
    rs.write(uri, root, "fixed", [P90_50], [rs.Trial(f"f{i}", "k90-50", 0.7 - 0.01 * i) for i in range(3)],
             study_spec=rs.spec("fixed", space=plain_space))
    rs.write(uri, root, "plain", [], [rs.Trial(f"p{i}", None, 0.7 - 0.01 * i,
                                               params={"finetune.layer_decay": 0.5 + 0.1 * i})
                                      for i in range(3)],
             study_spec=rs.spec("plain", "finetune", plain_space))
    syn.write_study(uri, "continuous", syn.simulate_trials(8, seed=3), root / "artifacts")
    return {"uri": uri, "root": root, "recipes": recipes}


def _analysis(store, name):
    return analyze(load_study(name, store["uri"]), OPTIONS)


def _t_ci(x) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    return tuple(stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x)))


def test_one_row_per_pretraining_key_with_its_scores_loss_and_cost(store):
    c = _analysis(store, "recipes").pretraining
    assert c.kind == "pretrain" and c.knobs == (MASK, CROP) and c.single == {} and c.continuous == {}
    t = c.table
    assert t["key"].tolist() == ["k90-50", "k75-50", "k90-20", "k75-20"]  # best first
    assert t[MASK].tolist() == [0.9, 0.75, 0.9, 0.75] and t[CROP].tolist() == [0.5, 0.5, 0.2, 0.2]
    first = t.iloc[0]
    assert ((first["trials"], first["completed"], first["pruned"], first["failed"], first["n_scored"])
            == (5, 3, 1, 1, 4))
    assert first["best"] == pytest.approx(0.712) and first["best_trial"] == "t00"
    # equal n: k75-20 has one complete fine-tune, so every row is its first complete one (pruned t03 never
    # counts)
    assert first["n_complete"] == 3 and first["k"] == 1 and first["topk_mean"] == pytest.approx(0.712)
    assert math.isnan(first["topk_low"])
    assert (first["pretrain_loss"] == pytest.approx(0.30)
            and first["pretrain_cost_hours"] == pytest.approx(0.05))
    assert first["users"] == 5 and first["pretrain_study"] == "recipes" and not first["reused_from_other"]
    second = t.iloc[1]
    assert second["n_complete"] == 2 and second["k"] == 1 and second["topk_mean"] == pytest.approx(0.698)
    last = t.iloc[3]
    assert last["k"] == 1 and last["topk_mean"] == pytest.approx(0.640) and math.isnan(last["topk_low"])


def test_equal_n_means_and_welch_interval():
    from thoraxmae.analysis.pretraining import _equal_n, welch

    rows = [{"complete_scores": [0.71, 0.70, 0.72, 0.60], "n_complete": 4},
            {"complete_scores": [0.69, 0.66, 0.68], "n_complete": 3}]
    _equal_n(rows)
    # the fewest complete fine-tunes of any row; later trials left out
    assert [r["k"] for r in rows] == [3, 3]
    assert (rows[0]["topk_mean"] == pytest.approx(0.71)
            and ((rows[0]["topk_low"], rows[0]["topk_high"])
                 == pytest.approx(_t_ci([0.71, 0.70, 0.72]))))
    diff, low, high = welch(rows[0]["complete_scores"], rows[1]["complete_scores"], 3)
    ref = stats.ttest_ind([0.71, 0.70, 0.72], [0.69, 0.66, 0.68], equal_var=False).confidence_interval(0.95)
    assert (diff == pytest.approx(0.71 - np.mean([0.69, 0.66, 0.68]))
            and (low, high) == pytest.approx(tuple(ref)))


def test_pruned_trial_scores_at_its_best_epoch(store):
    trials = _analysis(store, "recipes").trials.set_index("trial_id")
    assert (trials.loc["t03", "status"] == schema.STATUS_PRUNED
            and trials.loc["t03", "objective"] == pytest.approx(0.690))
    assert trials.loc["t00", "objective"] == pytest.approx(0.712)  # epoch 2 of 3, not the last


def test_recipes_differing_in_one_knob_are_paired_paper_value_first(store):
    c = _analysis(store, "recipes").pretraining
    got = [(p.knob, p.a, p.b, p.context, round(p.diff, 6)) for p in c.pairs]
    assert got == [(MASK, 0.9, 0.75, {CROP: 0.5}, 0.014), (MASK, 0.9, 0.75, {CROP: 0.2}, 0.01),
                   (CROP, 0.5, 0.2, {MASK: 0.9}, 0.062), (CROP, 0.5, 0.2, {MASK: 0.75}, 0.058)]
    assert pair_text(c, c.pairs[0]) == (
        f"`{MASK}` 0.9 (paper, X-rays) vs 0.75 (MAE, natural images) at `{CROP}` 0.5 (paper, X-rays): "
        f"best 0.7120 vs 0.6980; mean of 1 complete fine-tune each 0.7120 vs 0.6980, difference +0.0140 "
        f"(one fine-tune each: no interval, not compared).")
    assert all("do not overlap" not in pair_text(c, p) for p in c.pairs)  # order statistics give no CI


def test_compute_saved_by_reuse_is_computed_from_the_runs(store):
    r = _analysis(store, "recipes").pretraining.reuse
    assert (r.runs_spent, r.runs_no_reuse, r.logged, r.unit, r.reused_from) == (4, 10, False, "CPU-hours", {})
    assert r.hours_spent == pytest.approx(0.21) and r.hours_no_reuse == pytest.approx(0.52)
    assert reuse_text(r) == ("Pre-training: 4 runs, 0.21 CPU-hours spent; without reuse 10 runs, 0.52 "
                             "CPU-hours (2.5x).")


def test_a_trials_cost_is_its_finetuning_plus_its_share(store):
    trials = _analysis(store, "recipes").trials.set_index("trial_id")
    assert trials.loc["t00", "own_cost_hours"] == pytest.approx(rs.FINETUNE_HOURS)
    assert trials.loc["t00", "pretrain_share_hours"] == pytest.approx(0.05 / 5)  # 5 trials used k90-50
    assert trials.loc["t00", "cost_hours"] == pytest.approx(rs.FINETUNE_HOURS + 0.01)
    assert trials.loc["t05", "cost_hours"] == pytest.approx(rs.FINETUNE_HOURS + 0.06 / 2)
    assert not trials.loc["t00", "pretrain_reused"] and trials.loc["t01", "pretrain_reused"]


def test_a_key_reused_from_another_study_is_read_by_its_run_id(store):
    a = _analysis(store, "reuser")
    study = a.study
    other = next(p for p in study.pretrains if not p.own)
    assert other.run_id == store["recipes"].pretrain_runs["k90-50"] and other.study == "recipes"
    assert [p.key for p in study.pretrains if p.own] == ["k2-75-50"]
    c = a.pretraining
    row = c.table.set_index("key").loc["k90-50"]
    assert row["reused_from_other"] and row["pretrain_study"] == "recipes" and row["users"] == 2
    assert (a.trials.set_index("trial_id").loc["r0", "cost_hours"]
            == pytest.approx(rs.FINETUNE_HOURS + 0.05 / 2))
    r = c.reuse
    assert (r.runs_spent, r.runs_no_reuse, r.logged, r.reused_from) == (1, 4, True, {"recipes": ["k90-50"]})
    # the parent's metrics, not the 0.07 / 0.24 the runs add up to
    assert reuse_text(r) == ("Pre-training: 1 run, 0.071 CPU-hours spent; without reuse 4 runs, 0.242 "
                             "CPU-hours (3.4x).")
    assert [(p.knob, p.a, p.b, p.context) for p in c.pairs] == [(MASK, 0.9, 0.75, {})]


def test_encoder_study_compares_checkpoints_by_file_name(store):
    c = _analysis(store, "encoders").pretraining
    assert c.kind == "encoder" and c.knobs == (rs.INIT,) and c.reuse is None
    assert c.table["label"].tolist() == ["xray/vit_s.pth", "mae_xray.pt", "imagenet/vit_s.pth"]
    assert c.table["best"].tolist() == pytest.approx([0.72, 0.705, 0.70])
    assert "pretrain_loss" not in c.table
    assert [(c.table.loc[p.row_a, "label"], c.table.loc[p.row_b, "label"]) for p in c.pairs] == [
        ("xray/vit_s.pth", "mae_xray.pt"), ("xray/vit_s.pth", "imagenet/vit_s.pth"),
        ("mae_xray.pt", "imagenet/vit_s.pth")]
    assert pair_text(c, c.pairs[1]) == (
        "`xray/vit_s.pth` vs `imagenet/vit_s.pth`: best 0.7200 vs 0.7000; mean of 1 complete fine-tune each "
        "0.7200 vs 0.7000, difference +0.0200 (one fine-tune each: no interval, not compared).")


def test_encoder_labels_add_folders_only_where_names_clash():
    assert encoder_labels(["/a/x.pt", "/b/y.pt"]) == ["x.pt", "y.pt"]
    assert encoder_labels(["/a/c/x.pt", "/b/c/x.pt", "/b/y.pt"]) == ["a/c/x.pt", "b/c/x.pt", "y.pt"]
    assert encoder_labels(["registry:abc123"]) == ["registry:abc123"]


def test_trials_that_pretrained_themselves_group_by_knob_values(store):
    c = _analysis(store, "selftrained").pretraining
    assert c.reuse is None and c.table["key"].tolist() == [None, None]
    row = c.table.iloc[0]
    assert (row[MASK], row[CROP], row["trials"], row["pretrainings"]) == (0.9, 0.5, 2, 2)
    assert row["pretrain_loss"] == pytest.approx(0.30) and row["pretrain_cost_hours"] == pytest.approx(0.10)
    assert c.single == {CROP: 0.5}
    md = _markdown(_analysis(store, "selftrained"))
    assert "| 0.9 (paper, X-rays) | 0.5 (paper, X-rays) | 2: 2 completed, 0 pruned |" in md
    assert "| 0.3 (mean of 2) | 0.1 (2 pre-trainings) | – (no reuse) |" in md
    assert f"- `{CROP}`: only 0.5 (paper, X-rays) was run, so it is not compared." in md
    assert ("No pre-training reuse: each trial pre-trained for itself (4 pre-trainings of 2 recipes, 0.22 "
            "CPU-hours).") in md
    assert "| pre-training cost (CPU-hours) |" in md


def test_a_missing_pretraining_run_is_named_and_its_share_unknown(store):
    a = _analysis(store, "dangling")
    assert a.study.missing_pretrain_runs == ["0123456789abcdef0123456789abcdef"]
    assert math.isnan(a.trials["pretrain_share_hours"].iloc[0])
    assert a.trials["cost_hours"].tolist() == pytest.approx([rs.FINETUNE_HOURS] * 2)
    md = _markdown(a)
    assert ("- Not computed: pre-training run(s) `0123456789abcdef0123456789abcdef` linked from trials are "
            "not in MLflow: their loss and cost are unknown.") in md
    assert "without reuse 2 runs, unknown CPU-hours." in md and "(share unknown)" in md


def test_no_section_for_a_study_that_varies_neither(store):
    a = _analysis(store, "plain")
    assert a.pretraining is None and pretraining_section(a) is None
    assert "Pre-training" not in _markdown(a) and "pre-training" not in _markdown(a)


def test_reuse_without_varied_recipes_is_in_the_cost_section(store):
    a = _analysis(store, "fixed")
    assert a.pretraining is None and pretraining_section(a) is None
    line = "Pre-training: 1 run, 0.05 CPU-hours spent; without reuse 3 runs, 0.15 CPU-hours (3.0x)."
    assert reuse_text(a.reuse) == line
    md = _markdown(a)
    assert ("## Pre-training recipes" not in md and f"| pre-training reuse | {line} |" in md
            and f"- {line}" in md)
    assert ("| compute of all trials (fine-tuning + their shares of the shared pre-trainings) | 0.08 "
            "CPU-hours |") in md


def test_a_continuous_pretraining_knob_is_not_compared_row_by_row(store):
    a = _analysis(store, "continuous")
    n = len({t.params[MASK] for t in a.study.trials})
    assert a.pretraining.continuous == {MASK: n} and a.pretraining.table.empty and n == 8
    section = pretraining_section(a)
    assert section.blocks == [
        (f"**Recipes not compared one by one**: searched as a continuous range: `{MASK}` ({n} distinct "
         f"values); see Marginal effects. Recipes are compared here when their knobs are categorical (or "
         f"ranges with a step), as a study with pre-training reuse and coverage runs them.")]


def test_caveat_is_exploratory_unless_confirmation_runs_exist(store):
    a = _analysis(store, "recipes")
    assert EXPLORATORY in pretraining_section(a).blocks
    confirmed = dataclasses.replace(a, confirmation=Confirmation(a.study.metric, "max", None, a.study.metric,
                                                                 "pipeline", [], None, math.nan, 0, 1))
    blocks = pretraining_section(confirmed).blocks
    assert CONFIRMED in blocks and EXPLORATORY not in blocks


def test_report_shows_the_section_in_html_and_markdown(store, tmp_path):
    result = build_report("recipes", store["uri"], tmp_path, n_bootstrap=2, log_artifacts=False)
    md, html = result.markdown.read_text(), result.html.read_text()
    c = result.analysis.pretraining
    lines = ["## Pre-training recipes", pair_text(c, c.pairs[0]), EXPLORATORY,
             (f"| `{MASK}` | `{CROP}` | trials | best `val/mauc` (trial) | mean of n complete (95% CI) | "
              f"final `pretrain/loss` "
              f"| pre-training cost (CPU-hours) | share per trial |"),
             ("| 0.75 (MAE, natural images) | 0.2 (MAE, natural images) | 1: 1 completed, 0 pruned | "
              "0.6400 (`t09`) | "
              "0.6400 (n = 1 complete: no interval) | 0.26 | 0.05 | 0.05 (1 trial) |"),
             ("- **Pre-training: 4 runs, 0.21 CPU-hours spent; without reuse 10 runs, 0.52 CPU-hours "
              "(2.5x).** "
              "(computed from the runs: this study's own pre-training runs, and one pre-training per "
              "scored trial.)"),
             (f"- Best pre-training recipe: `{MASK}` 0.9 (paper, X-rays), `{CROP}` 0.5 (paper, X-rays) (best "
              f"`val/mauc` 0.7120; see Pre-training recipes)."),
             ("| compute of all trials (fine-tuning + their shares of the shared pre-trainings) | 0.307 "
              "CPU-hours |")]
    for line in lines:
        assert line in md, line
    first = c.table.iloc[0]
    assert f"5: 3 completed, 1 pruned, 1 failed | 0.7120 (`t00`) | {first['topk_mean']:.4f} (" in md
    assert md.index("## Recipe (exploratory)") < md.index("## Pre-training recipes") < md.index(
        "## Hyperparameter importance")
    assert _inline(pair_text(c, c.pairs[2])) in html and 'href="#pre-training-recipes"' in html
    assert "| 0.02 (share 0.01) |" in md  # t00: 0.01 own + 0.05 / 5 users of its key


def _markdown(a) -> str:
    from thoraxmae.analysis.render import render_markdown
    from thoraxmae.analysis.sections import build_sections

    return render_markdown("t", "s", build_sections(a, {}, ""))

"""`thoraxmae report` end to end on synthetic studies in a real MLflow (SQLite) with a known optimum.

Tolerances for the recovered optimum (top-20% median, 40 TPE trials, seed 0; over seeds 0-9 the
largest errors were 0.021 / 0.055 / 0.044): layer_decay +-0.05, drop_path +-0.06, mask_ratio +-0.05.
"""
from __future__ import annotations

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from tests.unit.analysis import reuse_synthetic as rs
from tests.unit.analysis import synthetic as syn
from thoraxmae.analysis import ReportError, build_report
from thoraxmae.cli import main
from thoraxmae.study import schema

pytestmark = pytest.mark.integration
TOLERANCE = {"finetune.layer_decay": 0.05, "finetune.drop_path": 0.06, "pretrain.mask_ratio": 0.05}
N_BOOTSTRAP = 10


TIED = [0.70, 0.70, 0.70, 0.70, 0.75]  # a finished 5-trial fine-tuning study whose trials mostly tie


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store holding the 40-trial study `synth`, a study with no trials, a 1-trial study,
    a tied 5-trial fine-tuning study and a study whose trials all failed."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    synth = syn.write_study(uri, "synth", syn.simulate_trials(40, seed=0), root / "artifacts")
    syn.write_empty_study(uri, "empty-study", root / "artifacts")
    one = [t for t in syn.simulate_trials(3, seed=1, failed_index=-1)
           if t.status == schema.STATUS_COMPLETED][:1]
    syn.write_study(uri, "single", one, root / "artifacts")
    finetune = syn.spec_dict("tied", space={k: v for k, v in syn.SPACE.items() if k.startswith("finetune.")})
    finetune["stage"] = "finetune"
    syn.write_study(uri, "tied", syn.flat_trials(TIED), root / "artifacts", spec=finetune)
    syn.write_study(uri, "all-failed", syn.flat_trials([0.0] * 3, status=schema.STATUS_FAILED),
                    root / "artifacts")
    paper, natural = rs.Pretraining("kp", 0.9, 0.5, 0.3, 0.04), rs.Pretraining("kn", 0.75, 0.2, 0.25, 0.02)
    rs.write(uri, root, "reuse", [paper, natural], [rs.Trial("a", "kp", 0.71), rs.Trial("b", "kp", 0.70),
                                                    rs.Trial("c", "kn", 0.69), rs.Trial("d", "kn", 0.66)])
    return {"uri": uri, "root": root, "synth": synth}


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    return build_report("synth", store["uri"], tmp_path_factory.mktemp("report"), n_bootstrap=N_BOOTSTRAP)


def test_recovers_planted_optimum(report):
    values = report.analysis.recipe.values()
    for knob, tol in TOLERANCE.items():
        assert abs(values[knob] - syn.OPTIMUM[knob]) <= tol, (knob, values[knob])
    spec = yaml.safe_load(report.recipe_yaml.read_text())
    assert "search" not in spec and spec["stage"] == "pipeline" and spec["name"] == "synth"
    assert spec["finetune"]["layer_decay"] == values["finetune.layer_decay"]
    assert spec["pretrain"]["mask_ratio"] == values["pretrain.mask_ratio"]
    assert spec["finetune"]["randaug_magnitude"] == values["finetune.randaug_magnitude"]
    assert spec["finetune"]["epochs"] == syn.EPOCHS  # fixed settings kept


def test_recipe_yaml_is_a_valid_study_spec(report):
    spec_mod = pytest.importorskip("thoraxmae.study.spec.load")
    spec = spec_mod.parse_spec(yaml.safe_load(report.recipe_yaml.read_text()), source="recipe.yaml")
    assert spec.finetune.drop_path == report.analysis.recipe.values()["finetune.drop_path"]


def test_recovers_planted_importance_order(report):
    imp = report.analysis.importance
    assert imp.ranked and imp.n_bootstrap == N_BOOTSTRAP
    assert imp.order[0] == syn.MOST_IMPORTANT and imp.order[-1] == syn.IRRELEVANT
    md = report.markdown.read_text()
    assert f"Most important knob: `{syn.MOST_IMPORTANT}`" in md and "threshold 80%" in md


def test_pruned_failed_and_running_trials_are_kept_apart(report, store):
    synth = store["synth"]
    trials = pd.read_parquet(report.trials_parquet)
    assert len(trials) == 40
    counts = trials["status"].value_counts().to_dict()
    for status in schema.TRIAL_STATUSES:
        assert counts.get(status, 0) == synth.count(status)
    assert synth.count(schema.STATUS_PRUNED) >= 5
    failed = trials[trials["status"] == schema.STATUS_FAILED].iloc[0]
    assert pd.isna(failed["objective"]) and failed["epochs_run"] == 0
    pruned = trials[trials["status"] == schema.STATUS_PRUNED]
    assert (pruned["epochs_run"] < pruned["max_epochs"]).all()
    assert len(report.analysis.scored) == 40 - 2
    cost = report.analysis.cost
    assert cost.n_pruned == synth.count(schema.STATUS_PRUNED) and 0 < cost.saved_fraction < 1
    curves = pd.read_parquet(report.curves_parquet)
    assert curves.groupby("trial_id")["epoch"].max().to_dict() == {
        t.trial_id: len(t.curve) for t in synth.trials if t.curve}


def test_report_files_and_artifact(report, store):
    for path in (report.html, report.markdown, report.recipe_yaml, report.trials_parquet):
        assert path.is_file() and path.stat().st_size > 0
    assert set(report.figures) == {"importance", "effects", "interaction", "history", "parallel", "curves",
                                   "cost"}
    html = report.html.read_text()
    assert html.count("data:image/png;base64,") == 7 and ".png\"" not in html
    md = report.markdown.read_text()
    for name, path in report.figures.items():
        assert path.is_file() and f"]({path.name})" in md, name
    assert report.logged_to_run == store["synth"].parent_run_id
    logged = {a.path for a in MlflowClient(store["uri"]).list_artifacts(report.logged_to_run, "report")}
    assert {"report/report.html", "report/recipe.yaml", "report/trials.parquet", "report/cost.png"} <= logged


def test_missing_study_names_study_and_uri(store, tmp_path):
    with pytest.raises(ReportError, match=r"study `nosuch` not found.*sqlite:///"):
        build_report("nosuch", store["uri"], tmp_path)
    with pytest.raises(ReportError, match=r"study name \"bad'name\": expected letters, digits"):
        build_report("bad'name", store["uri"], tmp_path)
    missing_db = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(ReportError, match=r"synth.*none\.db"):
        build_report("synth", missing_db, tmp_path)
    assert not (tmp_path / "none.db").exists()  # not created as a side effect


def test_empty_study_is_an_error(store, tmp_path):
    with pytest.raises(ReportError, match=r"study `empty-study` has no trial runs.*tracking URI sqlite:///"):
        build_report("empty-study", store["uri"], tmp_path)


def test_single_trial_report_says_importance_cannot_be_ranked(store, tmp_path):
    result = build_report("single", store["uri"], tmp_path, n_bootstrap=N_BOOTSTRAP, log_artifacts=False)
    assert not result.analysis.importance.ranked
    assert "Importance cannot be ranked" in result.html.read_text()
    assert ("**cannot rank importance** (1 scored trial(s), at least 5 are needed)"
            in result.markdown.read_text())
    assert "importance" not in result.figures and "interaction" not in result.figures
    assert result.analysis.recipe.confidence.k == 1 and result.recipe_yaml.is_file()
    assert result.logged_to_run is None


def test_cli_report_and_its_error(store, tmp_path, capsys):
    ref = tmp_path / "mine.yaml"
    ref.write_text("finetune.layer_decay: 0.8\n")
    assert main(["report", "single", "--tracking-uri", store["uri"], "--out", str(tmp_path / "r"),
                 "--bootstrap", "4", "--no-log", "--reference", str(ref)]) == 0
    out = capsys.readouterr().out
    assert "recipe:" in out and "Recipe status: exploratory (no confirmation runs" in out
    md = (tmp_path / "r" / "report.md").read_text()
    assert "mine.yaml" in md and "| `finetune.layer_decay` | 0.8 |" in md
    assert main(["report", "nosuch", "--tracking-uri", store["uri"], "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip().startswith("error: study `nosuch` not found")  # one line
    with pytest.raises(SystemExit) as exit_:
        main(["report", "single", "--tracking-uri", store["uri"], "--bootstrap", "-1"])
    assert exit_.value.code == 2 and "expected a whole number >= 0, got '-1'" in capsys.readouterr().err


@pytest.mark.parametrize("bootstrap", ["40", "0"])
def test_cli_report_of_a_tied_finetune_study(store, tmp_path, capsys, bootstrap):
    """The probe's crash: fANOVA "zero total variance" inside the bootstrap; `--bootstrap 0` IndexError."""
    out = tmp_path / "tied"
    assert main(["report", "tied", "--tracking-uri", store["uri"], "--out", str(out), "--bootstrap",
                 bootstrap,
                 "--no-log"]) == 0
    md = (out / "report.md").read_text()
    assert "## Recipe (exploratory)" in md and "(stage `finetune`), 5 trials: 5 completed" in md
    if bootstrap == "0":
        assert ("**Rank stability not checked**: no bootstrap resamples were asked for (--bootstrap 0); no "
                "order between knobs is stated.") in md
    else:
        assert "resamples drew only trials with one objective value (tied trials) and were left out" in md
    assert "Search scores of the top 3: mean `val/mauc` 0.7167" in md


def test_cli_report_of_a_pipeline_study_with_reuse(store, tmp_path, capsys):
    """The terminal names the best pre-training recipe and what reuse saved; the report compares recipes."""
    assert main(["report", "reuse", "--tracking-uri", store["uri"], "--out", str(tmp_path), "--no-log",
                 "--bootstrap", "2"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps at the terminal's width
    assert ("- Best pre-training recipe: `pretrain.mask_ratio` 0.9 (paper, X-rays), `pretrain.crop_min` 0.5 "
            "(paper, X-rays) (best `val/mauc` 0.7100; see Pre-training recipes).") in out
    assert "- Pre-training: 2 runs, 0.06 CPU-hours spent; without reuse 4 runs, 0.12 CPU-hours (2.0x)." in out
    md = (tmp_path / "report.md").read_text()
    assert "## Pre-training recipes" in md and "| 0.04 | 0.02 (2 trials) |" in md
    assert "`pretrain.mask_ratio`: no two recipes differ in it alone, so it is not compared." in md


def test_all_failed_study_gets_a_report_without_recipe(store, tmp_path, capsys):
    assert main(["report", "all-failed", "--tracking-uri", store["uri"], "--out", str(tmp_path),
                 "--no-log"]) == 0
    out = capsys.readouterr().out
    assert "No recipe: none of the 3 trials has a `val/mauc` value" in out
    assert not any(line.startswith("recipe:") for line in out.splitlines())  # no recipe.yaml to point at
    md = (tmp_path / "report.md").read_text()
    assert ("**No recipe**: none of the 3 trials has a `val/mauc` value from a completed or pruned run (3 "
            "failed); first error (trial `t000`): RuntimeError: simulated worker crash.") in md
    assert not (tmp_path / "recipe.yaml").exists() and (tmp_path / "history.png").is_file()


def test_search_only_recipe_is_labelled_exploratory(report):
    md = report.markdown.read_text()
    assert "## Recipe (exploratory)\n\n**Exploratory recipe: there are no confirmation runs.**" in md
    assert "Exploratory: without confirmation runs the seed-to-seed noise is unknown" in md
    assert "exceeds the noise" not in md and "other trials' mean" not in md
    assert "# Exploratory: no confirmation runs" in report.recipe_yaml.read_text()


def test_reads_a_study_written_by_study_tracking(tmp_path):
    """The real writer (study.tracking.StudyTracker) and this reader agree on the run schema."""
    spec_mod = pytest.importorskip("thoraxmae.study.spec.load")
    tracking = pytest.importorskip("thoraxmae.study.tracking.writer")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    raw = syn.spec_dict("tracked")
    raw["tracking"] = {"uri": uri, "experiment": "tracked-elsewhere"}  # found by the study tag instead
    tracker = tracking.StudyTracker(spec_mod.parse_spec(raw))
    tracker.start_study()
    for trial in syn.simulate_trials(8, seed=2, failed_index=3):
        run_id = tracker.start_trial(trial.trial_id, {k: str(v) for k, v in trial.params.items()})
        for epoch, value in enumerate(trial.curve, start=1):
            tracker.log_epoch(run_id, {schema.M_VAL_MAUC: value, schema.M_COST_CPU_HOURS: epoch / 120}, epoch)
        if trial.status != schema.STATUS_RUNNING:
            tracker.end_trial(run_id, trial.status)
    tracker.end_study()
    result = build_report("tracked", uri, tmp_path / "report", n_bootstrap=4)
    trials = result.analysis.trials
    assert len(trials) == 8 and (trials["status"] == schema.STATUS_FAILED).sum() == 1
    assert result.analysis.study.knobs == tuple(syn.SPACE)
    assert result.logged_to_run == tracker.parent_id
    assert result.analysis.study.spec["tracking"]["experiment"] == "tracked-elsewhere"

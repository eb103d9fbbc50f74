"""The recipe tournament on real local Ray and a real SQLite MLflow, on the phantom: the default demo's (the
session's `thoraxmae demo`, tests/integration/conftest.py: 4 recipes, rungs [1, 2], keep 0.5, k = 2 paired
scoring fine-tunes). Then a small tournament of the tiny ViT (2 recipes, k = 2) whose driver is killed
(SIGKILL of its process group) in the middle of rung 1 and resumed with `study resume`: the same bracket and
scores as the same tournament uninterrupted."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.study_helpers import CLI, subprocess_env, tiny_spec, write_spec
from thoraxmae.study import schema
from thoraxmae.study.registry import Registry
from thoraxmae.study.spec.load import load_spec
from thoraxmae.study.spec.tournament_plan import planned_epochs

pytestmark = pytest.mark.integration
RECIPES = 4


def small_tournament_spec(store: Path, tmp: Path, name: str) -> dict:
    """2 recipes (mask ratio 0.75, 0.9), rungs [1, 2], keep 0.5, k = 2: 3 pre-training and 6 scoring runs."""
    spec = tiny_spec(store, tmp, name, stage="pipeline", concurrent=2)
    spec["pretrain"].update({"schedule": "constant", "warmup_epochs": 0, "blr": 1.5e-3})
    spec["finetune"]["epochs"] = 2
    spec["search"] = {"scheduler": {"type": "none"},
                      "space": {"pretrain.mask_ratio": {"type": "categorical", "choices": [0.75, 0.9]},
                                "finetune.layer_decay": {"type": "float", "low": 0.5, "high": 0.9}},
                      "tournament": {"rungs": [1, 2], "keep": 0.5, "scoring": {"trials": 2, "seed": 1000}}}
    return spec


def scoring_runs(uri: str, name: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{schema.TAG_ROLE}` = "
                                                                 f"'{schema.ROLE_TRIAL}'")


def bracket_of(summary: dict) -> list[tuple[int, list[tuple[str, list[float], bool]]]]:
    return [(r["epochs"], [(s["recipe"], s["scores"], s["kept"]) for s in r["standings"]])
            for r in summary["rungs"]]


def _run(spec_path: Path, tmp: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "study", *args], cwd=tmp,
                            env=subprocess_env(**env), start_new_session=True,
                            stdout=open(tmp / "out.log", "a"), stderr=subprocess.STDOUT)


def summary_of(uri: str, name: str, tmp: Path) -> tuple[dict, object]:
    """The tournament's summary artifact and its study run."""
    client = MlflowClient(uri)
    parent = client.search_runs([client.get_experiment_by_name(name).experiment_id],
                                filter_string=f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_STUDY}'")[0]
    path = client.download_artifacts(parent.info.run_id, schema.ARTIFACT_TOURNAMENT, str(tmp))
    return json.loads(Path(path).read_text()), parent


@pytest.fixture(scope="module")
def tournament(demo_run, tmp_path_factory):
    """The default demo's tournament, uninterrupted: its MLflow, storage, summary and study run."""
    summary, parent = summary_of(demo_run.uri, demo_run.study, tmp_path_factory.mktemp("tournament"))
    return demo_run, summary, parent


def test_tournament_spends_the_planned_epochs_and_scores_every_recipe_paired(tournament):
    demo, summary, parent = tournament
    assert summary["pretrain_epochs"] == planned_epochs(RECIPES, [1, 2], 0.5) == 6  # 4 x 1 + 2 x 1
    assert summary["full_epochs"] == 8 and summary["one_epochs"] == 2
    assert parent.data.metrics[schema.M_TOURNAMENT_EPOCHS] == 6
    runs = scoring_runs(demo.uri, demo.study)
    assert len(runs) == 4 * 2 + 2 * 2 and all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags[schema.TAG_STATUS] for r in runs} == {schema.STATUS_COMPLETED}
    seeds: dict[tuple[str, str], list[str]] = {}
    for r in runs:
        key = (r.data.tags[schema.TAG_TOURNAMENT_RUNG], r.data.tags[schema.TAG_TOURNAMENT_RECIPE])
        seeds.setdefault(key, []).append(r.data.params["finetune.seed"])
    assert len(seeds) == 4 + 2  # every recipe at rung 1, the 2 kept at rung 2
    # k = 2, the same seeds everywhere
    assert {tuple(sorted(v)) for v in seeds.values()} == {("1000", "1001")}
    rung1, rung2 = summary["rungs"]
    assert len(rung1["standings"]) == 4 and sum(s["kept"] for s in rung1["standings"]) == 2
    assert {s["recipe"] for s in rung2["standings"]} == set(rung1["kept"])
    for s in rung1["standings"]:
        assert len(s["scores"]) == 2 and s["mean"] == pytest.approx(sum(s["scores"]) / 2)
        assert s["ci_low"] <= s["diff_to_leader"] <= s["ci_high"]
    assert summary["winner"] == rung2["leader"] and summary["encoder"].startswith("registry:")


def test_survivors_continued_without_repeating_an_epoch(tournament):
    demo, _summary, _ = tournament
    entries = Registry(demo.storage_path).entries()
    assert len(entries) == 4 + 2  # 4 recipes at epoch 1, 2 of them continued to epoch 2
    for entry in entries:
        epochs = [h["pretrain/epoch"] for h in entry.history]
        assert epochs == list(range(1, len(epochs) + 1)), epochs  # 1, 2: none twice, none missing
    continued = [e for e in entries if e.key.endswith("-e2")]
    assert len(continued) == 2 and all(e.source["continued_from"].endswith("-e1") for e in continued)


def test_driver_killed_mid_rung_resumes_to_the_same_bracket(phantom_store, tmp_path):
    ref_dir, kill_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    ref_dir.mkdir(), kill_dir.mkdir()
    ref_path = write_spec(small_tournament_spec(phantom_store, ref_dir, "tour"), ref_dir / "tour.yaml")
    assert _run(ref_path, ref_dir, "run", str(ref_path)).wait(timeout=900) == 0, \
        (ref_dir / "out.log").read_text()[-3000:]
    reference, _ = summary_of(load_spec(ref_path).tracking.uri, "tour", ref_dir)

    spec_path = write_spec(small_tournament_spec(phantom_store, kill_dir, "tour"), kill_dir / "tour.yaml")
    spec = load_spec(spec_path)
    proc = _run(spec_path, kill_dir, "run", str(spec_path))
    deadline = time.monotonic() + 600
    markers = kill_dir / "studies" / "tour" / "train"
    while time.monotonic() < deadline and proc.poll() is None:  # 2 of rung 1's 4 scoring fine-tunes finished
        # (not MLflow: no 2nd writer)
        if len(list(markers.glob("train-e1-*-finetune/thoraxmae_final.json"))) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the study ended before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = _run(spec_path, kill_dir, "resume", "tour", "--tracking-uri", spec.tracking.uri,
                   "--storage-path", str(spec.storage_path))
    assert resumed.wait(timeout=900) == 0, (kill_dir / "out.log").read_text()[-3000:]
    summary, _ = summary_of(spec.tracking.uri, "tour", kill_dir)
    assert len(summary["rungs"]) == 2 and len(summary["rungs"][0]["standings"]) == 2
    assert bracket_of(summary) == bracket_of(reference)  # the same cuts and the same scores, bit for bit
    runs = scoring_runs(spec.tracking.uri, "tour")
    tasks = [r.data.tags[schema.TAG_TOURNAMENT_TASK] for r in runs]
    assert len(tasks) == len(set(tasks)) == 2 * 2 + 1 * 2  # none lost, none twice
    assert all(r.info.status == "FINISHED" for r in runs)
    for entry in Registry(spec.storage_path).entries():
        epochs = [h["pretrain/epoch"] for h in entry.history]
        assert epochs == list(range(1, len(epochs) + 1))


def test_report_shows_the_bracket_and_the_rank_agreement(tournament, tmp_path):
    from thoraxmae.analysis.report import build_report

    demo, summary, _ = tournament
    result = build_report(demo.study, demo.uri, tmp_path / "report", n_bootstrap=0, log_artifacts=False)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Recipe tournament" in md and (tmp_path / "report" / "bracket.png").is_file()
    assert "Rungs 1 → 2 epochs: Kendall tau = " in md and "over 2 recipes" in md
    assert f"Pre-training epochs spent: **{summary['pretrain_epochs']}**, against 8" in md
    for recipe in summary["recipes"]:
        assert f"`{recipe}`" in md
    assert result is not None

"""The recipe tournament on real local Ray and a real SQLite MLflow, tiny ViT on the phantom: 4 recipes, rungs
[1, 2], keep 0.5, k = 2 paired scoring fine-tunes. Then a driver killed (SIGKILL of its process group) in the
middle of rung 1, resumed with `study resume`: the same bracket and scores."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.integration.study_helpers import subprocess_env, tiny_spec, write_spec
from thoraxmae.study import schema
from thoraxmae.study.registry import Registry
from thoraxmae.study.spec.load import load_spec
from thoraxmae.study.spec.tournament_plan import planned_epochs

pytestmark = pytest.mark.integration
RECIPES = 4


def tournament_spec(store: Path, tmp: Path, name: str) -> dict:
    spec = tiny_spec(store, tmp, name, stage="pipeline", concurrent=2)
    spec["pretrain"].update({"schedule": "constant", "warmup_epochs": 0, "blr": 1.5e-3})
    spec["finetune"]["epochs"] = 2
    spec["search"] = {"scheduler": {"type": "none"},
                      "space": {"pretrain.mask_ratio": {"type": "categorical", "choices": [0.75, 0.9]},
                                "pretrain.crop_min": {"type": "categorical", "choices": [0.2, 0.5]},
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
    return subprocess.Popen([sys.executable, "-m", "thoraxmae", "study", *args], cwd=tmp,
                            env=subprocess_env(**env), start_new_session=True,
                            stdout=open(tmp / "out.log", "a"), stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def tournament(phantom_store, tmp_path_factory):
    """One uninterrupted tournament, run by the CLI in its own process (its own local Ray)."""
    tmp = tmp_path_factory.mktemp("tournament")
    spec_path = write_spec(tournament_spec(phantom_store, tmp, "tour"), tmp / "tour.yaml")
    proc = _run(spec_path, tmp, "run", str(spec_path))
    assert proc.wait(timeout=900) == 0, (tmp / "out.log").read_text()[-3000:]
    spec = load_spec(spec_path)
    parent = MlflowClient(spec.tracking.uri).search_runs(
        [MlflowClient(spec.tracking.uri).get_experiment_by_name("tour").experiment_id],
        filter_string=f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_STUDY}'")[0]
    path = MlflowClient(spec.tracking.uri).download_artifacts(parent.info.run_id,
                                                              schema.ARTIFACT_TOURNAMENT, str(tmp))
    return spec, json.loads(Path(path).read_text()), parent, tmp


def test_tournament_spends_the_planned_epochs_and_scores_every_recipe_paired(tournament):
    spec, summary, parent, _tmp = tournament
    assert summary["pretrain_epochs"] == planned_epochs(RECIPES, [1, 2], 0.5) == 6  # 4 x 1 + 2 x 1
    assert summary["full_epochs"] == 8 and summary["one_epochs"] == 2
    assert parent.data.metrics[schema.M_TOURNAMENT_EPOCHS] == 6
    runs = scoring_runs(spec.tracking.uri, "tour")
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
    spec, _summary, _, _ = tournament
    entries = Registry(spec.storage_path).entries()
    assert len(entries) == 4 + 2  # 4 recipes at epoch 1, 2 of them continued to epoch 2
    for entry in entries:
        epochs = [h["pretrain/epoch"] for h in entry.history]
        assert epochs == list(range(1, len(epochs) + 1)), epochs  # 1, 2: none twice, none missing
    continued = [e for e in entries if e.key.endswith("-e2")]
    assert len(continued) == 2 and all(e.source["continued_from"].endswith("-e1") for e in continued)


def test_driver_killed_mid_rung_resumes_to_the_same_bracket(tournament, phantom_store, tmp_path):
    _, reference, _, _ = tournament
    spec_path = write_spec(tournament_spec(phantom_store, tmp_path, "tour"), tmp_path / "tour.yaml")
    spec = load_spec(spec_path)
    proc = _run(spec_path, tmp_path, "run", str(spec_path))
    deadline = time.monotonic() + 600
    markers = tmp_path / "studies" / "tour" / "train"
    while time.monotonic() < deadline and proc.poll() is None:  # 2 of rung 1's 8 scoring fine-tunes finished
        # (not MLflow: no 2nd writer)
        if len(list(markers.glob("train-e1-*-finetune/thoraxmae_final.json"))) >= 2:
            break
        time.sleep(0.5)
    assert proc.poll() is None, "the study ended before the kill"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = _run(spec_path, tmp_path, "resume", "tour", "--tracking-uri", spec.tracking.uri,
                   "--storage-path", str(spec.storage_path))
    assert resumed.wait(timeout=900) == 0, (tmp_path / "out.log").read_text()[-3000:]
    client = MlflowClient(spec.tracking.uri)
    parent = client.search_runs([client.get_experiment_by_name("tour").experiment_id],
                                filter_string=f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_STUDY}'")[0]
    summary = json.loads(Path(client.download_artifacts(parent.info.run_id, schema.ARTIFACT_TOURNAMENT,
                                                        str(tmp_path))).read_text())
    assert bracket_of(summary) == bracket_of(reference)  # the same cuts and the same scores, bit for bit
    runs = scoring_runs(spec.tracking.uri, "tour")
    tasks = [r.data.tags[schema.TAG_TOURNAMENT_TASK] for r in runs]
    assert len(tasks) == len(set(tasks)) == 12  # none lost, none twice
    assert all(r.info.status == "FINISHED" for r in runs)
    for entry in Registry(spec.storage_path).entries():
        epochs = [h["pretrain/epoch"] for h in entry.history]
        assert epochs == list(range(1, len(epochs) + 1))


def test_report_shows_the_bracket_and_the_rank_agreement(tournament, tmp_path):
    from thoraxmae.analysis.report import build_report

    spec, summary, _, _ = tournament
    result = build_report("tour", spec.tracking.uri, tmp_path / "report", n_bootstrap=0, log_artifacts=False)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Recipe tournament" in md and (tmp_path / "report" / "bracket.png").is_file()
    assert "Rungs 1 → 2 epochs: Kendall tau = " in md and "over 2 recipes" in md
    assert f"Pre-training epochs spent: **{summary['pretrain_epochs']}**, against 8" in md
    for recipe in summary["recipes"]:
        assert f"`{recipe}`" in md
    assert result is not None

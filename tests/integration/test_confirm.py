"""`thoraxmae study confirm`: the top recipe and the paper's re-run with shared fresh seeds (real local Ray,
real SQLite MLflow), as MLflow runs of role confirm that the report turns into a verdict; a confirmation
whose driver was killed resumes without duplicating runs."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

import pytest
from mlflow import MlflowClient

from tests.integration.study_helpers import CLI, subprocess_env, tiny_spec, trial_runs, write_spec
from thoraxmae.study import schema
from thoraxmae.study.spec.load import load_spec

pytestmark = pytest.mark.integration


def _confirm_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{schema.TAG_ROLE}` = "
                                                                 f"'{schema.ROLE_CONFIRM}'")


def _finetune_spec(store, tmp, name):
    raw = tiny_spec(store, tmp, name, num_samples=2, concurrent=2)
    raw["search"]["scheduler"] = {"type": "none"}
    raw["finetune"]["epochs"] = 2
    raw["search"]["space"] = {"finetune.layer_decay": {"type": "float", "low": 0.5, "high": 0.9}}
    return raw


def test_confirm_killed_resumes_then_reruns_recipe_and_reference_with_shared_seeds(study_ray, phantom_store,
                                                                                  tmp_path):
    """`study confirm --top 1 --seeds 2` (the CLI, its own local Ray) killed once a run is scored, run again:
    the 4 runs, none twice, the chosen recipe and the paper's with shared seeds; the report's verdict on them;
    then a larger request runs only what is missing."""
    from thoraxmae.cli.confirm import choose_recipes
    from thoraxmae.study.run.confirm import run_confirm

    raw = _finetune_spec(phantom_store, tmp_path, "conf")
    raw["resources"]["max_concurrent_trials"] = 1
    spec_path = write_spec(raw, tmp_path / "spec.yaml")
    spec = load_spec(spec_path)
    uri = spec.tracking.uri
    env = subprocess_env()
    run = subprocess.run([*CLI, "study", "run", str(spec_path)], env=env, cwd=tmp_path, capture_output=True,
                         check=False, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    trials = trial_runs(uri, "conf")
    (chosen,) = choose_recipes(spec, 1)  # top 1: the top-k median recipe (analysis/candidates.py)
    values = sorted(float(r.data.params["finetune.layer_decay"]) for r in trials)
    assert values[0] <= chosen.knobs["finetune.layer_decay"] <= values[-1]

    args = [*CLI, "study", "confirm", "conf", "--tracking-uri", uri, "--top", "1", "--seeds", "2"]
    proc = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not any(
            r.data.metrics.get(schema.M_VAL_MAUC) is not None for r in _confirm_runs(uri, "conf")):
        assert proc.poll() is None, "confirm ended before it could be killed"
        time.sleep(1)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray
    proc.wait(timeout=60)
    done = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    runs = _confirm_runs(uri, "conf")
    assert len(runs) == 4, [(r.data.tags.get(schema.TAG_RECIPE), r.data.params.get("seed")) for r in runs]
    assert Counter(r.data.tags[schema.TAG_RECIPE] for r in runs) == {chosen.label: 2,
                                                                     schema.RECIPE_REFERENCE: 2}
    for r in runs:
        assert r.data.tags[schema.TAG_PARENT] == trials[0].data.tags[schema.TAG_PARENT]
        assert r.data.tags[schema.TAG_STATUS] == schema.STATUS_COMPLETED
        assert r.data.params[schema.PARAM_SEED] in ("1000", "1001")  # the same seeds for both recipes: paired
        assert r.data.params["finetune.seed"] == r.data.params[schema.PARAM_SEED]
        if r.data.tags[schema.TAG_RECIPE] == chosen.label:
            assert r.data.tags.get(schema.TAG_SOURCE_RUN) == chosen.source_run
            assert (float(r.data.params["finetune.layer_decay"])
                    == pytest.approx(chosen.knobs["finetune.layer_decay"]))
        else:  # the paper's LLRD, 0.55 (docs/paper.md)
            assert (r.data.params["finetune.layer_decay"] == "0.55"
                    and schema.TAG_SOURCE_RUN not in r.data.tags)
    # the report rests on them: a verdict instead of the exploratory label
    from thoraxmae.analysis.report import build_report

    result = build_report("conf", uri, tmp_path / "report", n_bootstrap=4, log_artifacts=False)
    md = result.markdown.read_text()
    assert "**Verdict: " in md and "mean `test/mauc` (95% CI)" in md, md  # judged on the held-out split

    # a larger request (issue 23, N4: it used to resume the old one and run nothing): only the missing runs
    bigger = run_confirm(spec, choose_recipes(spec, 1), seeds=3)
    assert bigger.status(spec) == (len(bigger.requested), 0) == (6, 0) and bigger.new == 2
    runs = _confirm_runs(uri, "conf")
    assert len(runs) == 4 + 2
    pairs = Counter((r.data.tags[schema.TAG_RECIPE], r.data.params[schema.PARAM_SEED]) for r in runs)
    assert max(pairs.values()) == 1, pairs  # no recipe and seed run twice
    assert {s for (label, s) in pairs if label == schema.RECIPE_REFERENCE} == {"1000", "1001", "1002"}
    assert run_confirm(spec, choose_recipes(spec, 1), seeds=3).new == 0  # the same request again: nothing new


def test_pipeline_confirmation_with_two_pretrain_seeds_pretrains_each_recipe_again(study_ray, phantom_store,
                                                                                  tmp_path):
    """confirm.pretrain_seeds 2 (issue 21): each recipe and the reference are fine-tuned from 2
    pre-trainings (the study's seed, reused, and one more, registered apart), every (recipe, pre-training
    seed, seed) one run logging `pretrain.seed`, so the verdict names the pre-training seeds."""
    import json

    from thoraxmae.analysis.report import build_report
    from thoraxmae.study.run.confirm import ConfirmRecipe, run_confirm
    from thoraxmae.study.run.tune import run_study

    raw = tiny_spec(phantom_store, tmp_path, "confpre", stage="pipeline", num_samples=2)
    raw["search"]["scheduler"] = {"type": "none"}
    raw["search"]["space"] = {"pretrain.mask_ratio": {"type": "categorical", "choices": [0.75, 0.9]}}
    raw["pretrain"]["epochs"] = raw["finetune"]["epochs"] = 1
    raw["confirm"] = {"top": 1, "seeds": 2, "pretrain_seeds": 2}
    spec = load_spec(write_spec(raw, tmp_path / "spec.yaml"))
    run_study(spec)
    trial = next(r for r in trial_runs(spec.tracking.uri, "confpre")
                 if r.data.params["pretrain.mask_ratio"] == "0.75")  # the paper's is 0.9: the reference
    recipe = ConfirmRecipe(f"trial-{trial.data.tags[schema.TAG_TRIAL_ID]}", trial.info.run_id,
                           {"pretrain.mask_ratio": 0.75})
    result = run_confirm(spec, [recipe], seeds=2, pretrain_seeds=spec.confirm.pretrain_seeds)
    assert result.status(spec) == (8, 0)

    runs = _confirm_runs(spec.tracking.uri, "confpre")
    got = Counter((r.data.tags[schema.TAG_RECIPE], r.data.params["pretrain.seed"],
                   r.data.params[schema.PARAM_SEED]) for r in runs)
    assert got == {(label, ps, s): 1 for label in (recipe.label, schema.RECIPE_REFERENCE)
                   for ps in ("0", "1000") for s in ("1000", "1001")}
    registry = tmp_path / "studies" / "pretrain-registry"
    keys = [json.loads((d / "key.json").read_text()) for d in registry.iterdir()
            if (d / "entry.json").exists()]
    by_recipe = Counter(k["pretrain"]["mask_ratio"] for k in keys)
    assert by_recipe == {0.75: 2, 0.9: 2}, keys  # 2 registered pre-trainings per recipe
    assert {k["pretrain"]["seed"] for k in keys} == {0, 1000}

    md = build_report("confpre", spec.tracking.uri, tmp_path / "report", n_bootstrap=4,
                      log_artifacts=False).markdown.read_text()
    assert "2 fine-tuning seeds x 2 pre-training seeds per recipe" in md, md

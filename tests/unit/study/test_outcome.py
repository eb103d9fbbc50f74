"""A study's outcome and summary (exit status, best trial) and the checkpoint sweep, without starting Ray."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import write_store_manifest
from thoraxmae.cli.progress import StudyProgress, outcome
from thoraxmae.study import schema
from thoraxmae.study.run.sweep import sweep_checkpoints
from thoraxmae.study.spec.load import parse_spec, with_defaults
from thoraxmae.study.tracking.results import PHASE_KEY


@pytest.fixture()
def spec(tmp_path):
    raw = {"name": "o", "stage": "pipeline", "data": {"store": str(write_store_manifest(tmp_path / "s"))},
           "model": {"name": "vit_tiny_test"}, "pretrain": {"epochs": 2, "warmup_epochs": 1},
           "finetune": {"epochs": 3, "warmup_epochs": 1}, "search": {"num_samples": 4},
           "tracking": {"uri": f"sqlite:///{tmp_path / 'm.db'}"}, "storage_path": str(tmp_path / "studies")}
    return with_defaults(parse_spec(raw))


def result(trial_id: str, error: Exception | None = None, **metrics):
    return SimpleNamespace(metrics={"trial_id": trial_id, **metrics}, error=error, path=f"/x/{trial_id}")


def test_every_trial_failed_is_a_failure_with_the_first_error(spec):
    grid = [result("a", RuntimeError("Traceback (most recent call last):\n  ...\nValueError: "
                                     "batch_size=5000")),
            result("b", RuntimeError("boom"))]
    out = outcome(spec, grid)
    assert not out.ok and out.scored == [] and out.failed[0] == ("a", "ValueError: batch_size=5000")


def test_a_scored_study_with_a_failed_trial_succeeds_but_a_lost_trial_fails_it(spec):
    ok = [result("a", **{schema.M_VAL_MAUC: 0.6, PHASE_KEY: "finetune"}), result("b", RuntimeError("x"))]
    assert outcome(spec, ok).ok
    # ended without a score or an error: a pipeline trial whose fine-tuning never reported
    lost = [*ok, result("c", **{schema.M_VAL_MAUC: math.nan, PHASE_KEY: "pretrain"})]
    out = outcome(spec, lost)
    assert not out.ok and out.lost == ["c"] and out.scored == ["a"]


def test_the_best_trial_is_never_a_failed_one(spec, capsys):
    progress = StudyProgress(spec)
    for tid, values in {"a": [0.50, 0.5753, 0.5719], "b": [0.9]}.items():
        progress.on_trial_start(0, [], SimpleNamespace(trial_id=tid))
        for v in values:
            progress.on_trial_result(0, [], SimpleNamespace(trial_id=tid),
                                     {schema.M_VAL_MAUC: v, PHASE_KEY: "finetune"})
    assert progress.best == (0.9, "b")
    failed = SimpleNamespace(trial_id="b", error_file=None,
                             get_error=lambda: "Traceback ...\nValueError: boom")
    progress.on_trial_error(0, [], failed)
    assert progress.best == (0.5753, "a")  # the best epoch of a, not its last, and never the failed b
    assert "[study o] trial b failed: ValueError: boom | running 1" in capsys.readouterr().out


def _run_dir(root: Path, name: str, checkpoints: list[str], named: list[str]) -> Path:
    run = root / "train" / name
    for c in checkpoints:
        (run / c).mkdir(parents=True)
        (run / c / "checkpoint.pt").write_bytes(b"x")
    run.mkdir(parents=True, exist_ok=True)
    state = {"checkpoint_results": [{"checkpoint_dir_name": n, "metrics": {}} for n in named],
             "latest_checkpoint_result": {"checkpoint_dir_name": named[-1], "metrics": {}} if named else None}
    (run / "checkpoint_manager_snapshot.json").write_text(json.dumps(state))
    return run


def test_sweep_removes_only_checkpoints_no_run_record_names(tmp_path):
    c1, c2, c3 = (f"checkpoint_2026-12-02_14-1{i}-00.000000" for i in range(3))
    run = _run_dir(tmp_path, "train-a", [c1, c2, c3], [c2])  # c3: uploaded by an attempt that then failed
    (run / "thoraxmae_final.json").write_text(json.dumps({"checkpoint": str(run / c1)}))
    odd = _run_dir(tmp_path, "train-b", ["checkpoint_custom"], ["something_else"])  # names Ray might change
    removed = sweep_checkpoints(tmp_path)
    assert [str(p) for p in removed] == [str(run / c3)]
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == [c1, c2]
    assert (odd / "checkpoint_custom").is_dir()


def test_sweep_works_on_object_storage(tmp_path):
    """The same sweep on an S3 storage path (a real moto server): only the unnamed checkpoint goes."""
    from pyarrow import fs

    from tests.s3_server import BUCKET, moto_server
    from thoraxmae.datasets.storage import Location

    c1, c2 = (f"checkpoint_2026-12-02_14-1{i}-00.000000" for i in range(2))
    local = _run_dir(tmp_path / "src", "train-a", [c1, c2], [c1])
    with moto_server(tmp_path / "moto.log"):
        root = Location.of(f"s3://{BUCKET}/tune/study")
        fs.copy_files(str(tmp_path / "src"), root.fs_path, source_filesystem=fs.LocalFileSystem(),
                      destination_filesystem=root.fs)
        removed = sweep_checkpoints(f"s3://{BUCKET}/tune/study")
        run = root / "train" / local.name
        assert [str(p) for p in removed] == [str(run / c2)]
        assert [p.name for p in run.iterdir()] == [c1, "checkpoint_manager_snapshot.json"]

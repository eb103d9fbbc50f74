"""A study's storage on object storage (a real S3-compatible server, moto's server mode on 127.0.0.1): Tune's
folder found, checked and removed through datasets.storage.Location; a missing object-store init is refused
by name; a checkpoint folder on the store reaches MLflow as a local copy; `--storage-path` keeps a URI."""
from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from tests.conftest import write_store_manifest
from tests.s3_server import BUCKET
from thoraxmae.datasets.storage import Location
from thoraxmae.study.errors import SpecError
from thoraxmae.study.spec import checks as validate
from thoraxmae.study.spec.load import dump_spec, parse_spec, with_defaults
from thoraxmae.study.tracking.lookup import (
    SPEC_FILE,
    TUNER_FILE,
    check_new_study,
    check_resumable,
    has_tune_state,
    locate_spec,
    storage_arg,
    study_dir,
)
from thoraxmae.study.tracking.remove import find_leftovers, remove_study
from thoraxmae.study.tracking.writer import StudyTracker


@pytest.fixture()
def storage(s3, request) -> str:
    return f"s3://{BUCKET}/tune/{request.node.name}"  # one storage per test


def _spec(tmp_path: Path, name: str, storage: str, **finetune):
    raw = {"name": name, "stage": "finetune",
           "data": {"store": str(write_store_manifest(tmp_path / "store"))},
           "model": {"name": "vit_tiny_test"}, "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
           "search": {"num_samples": 2,
                      "space": {"finetune.blr": {"type": "float", "low": 1e-5, "high": 1e-3}}},
           "finetune": {"epochs": 3, "warmup_epochs": 1, **finetune}, "storage_path": storage}
    return with_defaults(parse_spec(raw))


def test_study_folder_and_spec_on_s3(tmp_path, storage):
    spec = _spec(tmp_path, "s3study", storage)
    folder = study_dir(spec.storage_path, "s3study")
    assert folder.uri == f"{storage}/s3study" and not folder.is_local
    assert not has_tune_state(folder)
    with pytest.raises(SpecError, match=rf"study `s3study`: {storage}/s3study/{SPEC_FILE} not found"):
        locate_spec("s3study", storage_path=storage)
    (folder / SPEC_FILE).write_text(dump_spec(spec))
    (folder / TUNER_FILE).write_bytes(b"")
    assert has_tune_state(folder)
    assert locate_spec("s3study", storage_path=storage) == spec


def test_a_failed_start_on_s3_is_named_and_resumable(tmp_path, storage):
    spec = _spec(tmp_path, "half", storage)
    with pytest.raises(SpecError, match=rf"no Tune state for study `half` at {storage}/half .*--storage-path "
                                        rf"{storage} --yes"):
        check_resumable(spec)
    check_new_study(spec)  # nothing there yet
    (study_dir(storage, "half") / "error.txt").write_text("a start that failed early")
    with pytest.raises(SpecError, match=rf"study `half` has a Tune folder {storage}/half but no parent run "
                                        r"in "
                                        rf"sqlite:///.*; delete it with `thoraxmae study remove half "):
        check_new_study(spec)
    (study_dir(storage, "half") / TUNER_FILE).write_bytes(b"")
    with pytest.raises(SpecError, match=r"resume it with `thoraxmae study resume half --storage-path "
                                        rf"{storage}`"):
        check_new_study(spec)
    check_resumable(spec)


def test_remove_finds_and_deletes_the_tune_folder_on_s3(tmp_path, storage):
    spec = _spec(tmp_path, "gone", storage)
    tracker = StudyTracker(spec)
    tracker.start_study()  # the parent run's spec names the storage
    tracker.end_trial(tracker.start_trial("t1", {"finetune.blr": "0.001"}), "completed")
    folder = study_dir(storage, "gone")
    (folder / TUNER_FILE).write_bytes(b"")
    (folder / "train" / "run-1" / "checkpoint_000000" / "checkpoint.pt").write_bytes(b"weights")
    kept = study_dir(storage, "kept") / TUNER_FILE
    kept.write_bytes(b"")

    found = find_leftovers("gone", spec.tracking.uri)
    assert found.folders == [folder] and len(found.run_ids) == 2
    assert f"Tune folder: {storage}/gone (deleted)" in found.describe()
    remove_study(found)
    assert not folder.exists() and kept.is_file()
    with pytest.raises(SpecError, match=rf"nothing to remove: .* and no Tune folder at {storage}/gone"):
        find_leftovers("gone", spec.tracking.uri, storage)


def test_remove_never_deletes_an_s3_folder_that_is_not_a_study(tmp_path, storage):
    (study_dir(storage, "mine") / "thesis.tex").write_text("keep me")
    with pytest.raises(SpecError, match=rf"{storage}/mine holds neither Tune state nor {SPEC_FILE}"):
        find_leftovers("mine", f"sqlite:///{tmp_path / 'mlflow.db'}", storage)
    (study_dir(storage, "mine") / SPEC_FILE).write_text("name: mine\n")
    found = find_leftovers("mine", f"sqlite:///{tmp_path / 'mlflow.db'}", storage)  # a start that failed
    assert found.run_ids == [] and found.folders == [study_dir(storage, "mine")]
    remove_study(found)
    assert not study_dir(storage, "mine").exists()


def _checkpoint() -> bytes:
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(3)}}, buf)
    return buf.getvalue()


def test_an_s3_init_must_be_there_and_a_checkpoint(tmp_path, storage):
    missing = f"{storage}/ckpt/none.pth"
    with pytest.raises(SpecError, match=rf"<spec>: finetune.init: {missing}: no such file on the object "
                                        r"store"):
        validate.check_files(_spec(tmp_path, "init", storage, init=missing))
    garbage = Location.of(f"{storage}/ckpt/garbage.pth")
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(SpecError, match=rf"finetune.init: {garbage.uri}: "):
        validate.check_files(_spec(tmp_path, "init", storage, init=garbage.uri))
    good = Location.of(f"{storage}/ckpt/good.pth")
    good.write_bytes(_checkpoint())
    validate.check_files(_spec(tmp_path, "init", storage, init=good.uri))
    with pytest.raises(SpecError, match=rf"finetune.init: {good.uri} is a thoraxmae checkpoint, not timm"):
        validate.check_files(_spec(tmp_path, "init", storage, init=good.uri, init_format="timm"))


def test_a_checkpoint_folder_on_s3_is_a_local_copy_while_needed(tmp_path, storage):
    from thoraxmae.datasets.storage import local_dir as checkpoint_local_dir

    ckpt = Location.of(storage) / "study" / "checkpoint_000002"
    (ckpt / "best_model.pt").write_bytes(b"best")
    (ckpt / "sub" / "extra.json").write_text("{}")
    with checkpoint_local_dir(ckpt.uri) as local:
        assert local.name == "checkpoint_000002"
        assert (local / "best_model.pt").read_bytes() == b"best" and (local / "sub" / "extra.json").is_file()
    assert not local.exists()
    with checkpoint_local_dir(f"{storage}/study/checkpoint_000009") as local:
        assert not local.exists()
    with checkpoint_local_dir(tmp_path) as local:
        assert local == tmp_path


def test_a_trial_checkpoint_on_s3_reaches_mlflow(tmp_path, storage):
    """Ray names a checkpoint inside the storage's filesystem (no scheme); the callback logs it all the
    same."""
    from types import SimpleNamespace

    from thoraxmae.study import schema
    from thoraxmae.study.tracking.callback import MlflowStudyCallback

    callback = MlflowStudyCallback(_spec(tmp_path, "art", storage))
    callback.tracker.start_study()
    run_id = callback.tracker.start_trial("t1", {"finetune.blr": "0.001"})
    ckpt = study_dir(storage, "art") / "train" / "checkpoint_000001"
    (ckpt / "best_model.pt").write_bytes(b"best")
    callback._checkpoints["t1"] = ckpt.fs_path
    callback._finish_artifacts(SimpleNamespace(trial_id="t1"), run_id)
    logged = callback.tracker.client.list_artifacts(run_id, schema.ARTIFACT_CHECKPOINT_DIR)
    assert [Path(a.path).name for a in logged] == ["best_model.pt"]


def test_storage_path_arguments_keep_a_uri(tmp_path, monkeypatch):
    import argparse

    from thoraxmae.cli import study as cli_study

    monkeypatch.chdir(tmp_path)
    parser = argparse.ArgumentParser()
    cli_study.register(parser.add_subparsers())
    for action in ("resume", "remove", "confirm"):
        args = parser.parse_args(["study", action, "x", "--storage-path", "s3://bucket/tune"])
        assert args.storage_path == "s3://bucket/tune"
        assert parser.parse_args(["study", action, "x", "--storage-path", "studies"]).storage_path == \
            tmp_path.resolve() / "studies"
    assert storage_arg("gs://b/t") == "gs://b/t"

"""Loose values the probe saw accepted (2026-12-07): a boolean read as a number (`finetune.epochs: true` ran 1
epoch), `report --top-fraction 2`, and a relative `--labels-csv` read from the source folder instead of the
working directory. Each is refused in one line naming the field, or resolved like every other path."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pydantic
import pytest
import yaml

from tests.conftest import write_store_manifest
from tests.unit.datasets.fixtures_sources import write_dicom_folder
from thoraxmae.cli import build_parser, main
from thoraxmae.datasets.config import DataConfig
from thoraxmae.trainers.config import FinetuneConfig, ModelConfig, PretrainConfig
from thoraxmae.trainers.jobs import FinetuneJob


@pytest.fixture()
def no_ray(monkeypatch):
    import ray

    def tripwire(*_, **__):
        raise AssertionError("Ray started for an input that should have been refused before it")

    monkeypatch.setattr(ray, "init", tripwire)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# --- booleans are not numbers
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "field", "value"), [
    (FinetuneConfig, "epochs", True),
    (FinetuneConfig, "blr", False),
    (FinetuneConfig, "randaug_magnitude", True),
    (FinetuneConfig, "max_steps_per_epoch", True),  # int | None
    (PretrainConfig, "mask_ratio", True),
    (PretrainConfig, "batch_size", True),
    (ModelConfig, "depth", True),
    (DataConfig, "num_workers", True),
])
def test_a_boolean_is_not_a_number_in_the_trainers_configs(cls, field, value):
    raw = {"store": "s"} if cls is DataConfig else {}
    with pytest.raises(pydantic.ValidationError) as err:
        cls.model_validate({**raw, field: value})
    (e,) = err.value.errors()
    assert (e["loc"] == (field,)
            and e["msg"] == f"Input should be a number, not the boolean {str(value).lower()}")


def test_booleans_stay_booleans_and_numbers_stay_numbers():
    cfg = FinetuneConfig.model_validate({"hflip": False, "epochs": 10, "blr": 1, "max_steps_per_epoch": None})
    assert cfg.hflip is False and cfg.epochs == 10 and cfg.blr == 1.0 and cfg.max_steps_per_epoch is None
    assert PretrainConfig.model_validate({"norm_pix_loss": True}).norm_pix_loss is True


def test_a_job_refuses_a_boolean_in_its_own_fields():
    job = {"model": {"name": "vit_tiny_test"}, "data": {"store": "s"}, "finetune": {"epochs": True}}
    with pytest.raises(pydantic.ValidationError, match=r"finetune\.epochs\n.*not the boolean true"):
        FinetuneJob.model_validate(job)


@pytest.mark.parametrize("override", ["finetune.epochs=true", "finetune.blr=false", "data.num_workers=true",
                                      "model.depth=true", "search.num_samples=true",
                                      "resources.max_concurrent_trials=true",
                                      "resources.workers_per_trial=false"])
def test_study_run_refuses_a_boolean_for_a_number_before_ray(tmp_path, monkeypatch, capsys, no_ray, override):
    monkeypatch.chdir(tmp_path)
    write_store_manifest(tmp_path / "store")
    raw = {"name": "b", "stage": "finetune", "data": {"store": str(tmp_path / "store")},
           "model": {"name": "vit_tiny_test"}, "finetune": {"epochs": 2, "warmup_epochs": 1},
           "search": {"num_samples": 2,
                      "space": {"finetune.layer_decay": {"type": "float", "low": 0.5, "high": 0.9}}},
           "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
           "storage_path": str(tmp_path / "studies")}
    spec = tmp_path / "s.yaml"
    spec.write_text(yaml.safe_dump(raw))
    assert main(["study", "run", str(spec), "--set", override]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    field, value = override.split("=")
    assert re.match(rf"error: .*s\.yaml: {re.escape(field)}: Input should be a number, not the boolean "
                    rf"{value}", line)
    assert not (tmp_path / "studies").exists() and not (tmp_path / "mlflow.db").exists()


# --- report --top-fraction
# -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["2", "0", "-0.2", "1.0001", "nan", "inf", "a fifth"])
def test_report_top_fraction_outside_0_1_is_refused(capsys, value):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["report", "s", "--top-fraction", value])
    assert exit_.value.code == 2
    assert ("argument --top-fraction: expected a share of the completed trials in (0, 1], e.g. 0.2; got "
            f"{value!r}"
            in capsys.readouterr().err)


@pytest.mark.parametrize(("value", "parsed"), [("1", 1.0), ("0.2", 0.2), ("1e-3", 0.001)])
def test_report_top_fraction_in_range_is_taken(value, parsed):
    assert build_parser().parse_args(["report", "s", "--top-fraction", value]).top_fraction == parsed


# --- --labels-csv resolves like every other path
# -----------------------------------------------------------------
@pytest.mark.parametrize(("where", "given"), [
    ("meta/labels-2026.csv", "meta/labels-2026.csv"),  # relative: from the working directory
    ("meta/labels-2026.csv", "{cwd}/meta/labels-2026.csv"),  # absolute
    (None, None),  # not given: labels.csv in the DICOM folder
])
def test_labels_csv_is_read_from_where_the_user_points(tmp_path, monkeypatch, capsys, where, given):
    root = write_dicom_folder(tmp_path / "dicom")
    cwd = tmp_path / "work"
    cwd.mkdir()
    if where is not None:
        (cwd / where).parent.mkdir(parents=True)
        shutil.move(root / "labels.csv", cwd / where)
    monkeypatch.chdir(cwd)
    argv = ["data", "prepare", str(root), "--format", "dicom", "--out", "store", "--size", "8", "--workers",
            "1",
            "--quiet"]
    if given is not None:
        argv += ["--labels-csv", given.format(cwd=cwd)]
    assert main(argv) == 0, capsys.readouterr().err
    assert (cwd / "store" / "manifest.json").is_file()


def test_a_missing_relative_labels_csv_is_named_from_the_working_directory(tmp_path, monkeypatch, capsys):
    root = write_dicom_folder(tmp_path / "dicom")
    monkeypatch.chdir(tmp_path)
    assert main(["data", "prepare", str(root), "--format", "dicom", "--labels-csv", "f/x.csv", "--out",
                 "s"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: {tmp_path / 'f' / 'x.csv'}") and "dicom/f/x.csv" not in line, line
    assert not Path(tmp_path / "s").exists()

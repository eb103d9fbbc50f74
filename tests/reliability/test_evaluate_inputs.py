"""`thoraxmae evaluate` with bad input: one line, exit 2, no traceback, no MLflow run left behind. Option
errors
stop in argparse (one `error:` line naming the option), file errors at the CLI boundary (one `error:` line
naming the file). An object-store URI stays a URI (a folded `s3:/...` path would mislead)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import torch

from tests.unit.trainers.test_evaluate import TINY, finetuned
from thoraxmae.cli import main


@pytest.fixture()
def good(phantom_store, tmp_path) -> Path:
    path = tmp_path / "good.pt"
    torch.save({"model": finetuned(phantom_store).state_dict(), "model_config": TINY.model_dump()}, path)
    return path


def _nan(good: Path) -> Path:
    ck = torch.load(good, weights_only=True)
    ck["model"] = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                   for k, v in ck["model"].items()}
    torch.save(ck, good.with_name("nan.pt"))
    return good.with_name("nan.pt")


def _imagenet_one_channel(good: Path) -> Path:
    """A released-format file declaring ImageNet statistics for a one-channel model."""
    ck = torch.load(good, weights_only=True)
    state = dict(ck["model"])
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"][:, :1].clone()
    args = argparse.Namespace(model="vit_tiny_test", dataset="chestxray", norm_stats="imagenet")
    torch.save({"model": state, "optimizer": {}, "epoch": 1, "scaler": {}, "args": args},
               good.with_name("in1.pth"))
    return good.with_name("in1.pth")


OPTION_CASES = [  # (extra arguments, the error line's pattern)
    (["--workers", "-1"], r"argument --workers: expected an integer >= 0, got '-1'"),
    (["--bootstrap", "-5"], r"argument --bootstrap: expected an integer >= 0, got '-5'"),
    (["--batch-size", "0"], r"argument --batch-size: expected an integer >= 1, got '0'"),
    (["--workers", "two"], r"argument --workers: expected an integer >= 0, got 'two'"),
    (["--device", "gpu"], r"argument --device: not a torch device \(e.g. cpu, cuda, cuda:1\)"),
    (["--norm-stats", "cifar"], r"argument --norm-stats: invalid choice: 'cifar'"),
]
if not torch.cuda.is_available():
    OPTION_CASES.append((["--device", "cuda"], r"argument --device: CUDA is not available on this machine"))


@pytest.mark.parametrize("extra, pattern", OPTION_CASES, ids=[" ".join(c[0]) for c in OPTION_CASES])
def test_bad_options_stop_in_one_line_with_exit_2(good, phantom_store, tmp_path, capsys, extra, pattern):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(SystemExit) as info:
        main(["evaluate", str(good), "--store", str(phantom_store), "--tracking-uri", uri, *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("error: thoraxmae evaluate: ") and re.search(pattern, err[0]), err
    assert err[0].endswith("(see `thoraxmae evaluate --help`)")
    assert not (tmp_path / "mlflow.db").exists()


FILE_CASES = [  # (checkpoint maker, the error line's pattern)
    (_nan, r"^error: .*nan.pt: \d+ of \d+ weight tensors hold NaN or infinite values \(e.g. "),
    (_imagenet_one_channel, (r"^error: .*in1.pth: its args.norm_stats='imagenet' gives 3 mean values for a "
                             r"model "
                            r"that reads 1 channel\(s\)")),
]


@pytest.mark.parametrize("make, pattern", FILE_CASES, ids=["nan weights", "imagenet statistics, 1 channel"])
def test_unusable_checkpoints_are_one_error_line_and_leave_no_run(good, phantom_store, tmp_path, capsys, make,
                                                                  pattern):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["evaluate", str(make(good)), "--store", str(phantom_store), "--tracking-uri", uri,
                 "--bootstrap", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and re.search(pattern, err[0]), err
    exp = MlflowClient(uri).get_experiment_by_name("evaluations")
    assert exp is None or not MlflowClient(uri).search_runs([exp.experiment_id])


def test_an_object_store_uri_stays_a_uri(good, phantom_store, tmp_path, capsys, s3, monkeypatch):
    from mlflow import MlflowClient

    from tests.s3_server import BUCKET
    from thoraxmae.datasets.remote import upload_store
    from thoraxmae.datasets.storage import Location

    monkeypatch.setenv("THORAXMAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    store, ckpt = f"s3://{BUCKET}/eval/nih64", f"s3://{BUCKET}/eval/good.pt"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["evaluate", str(good), "--store", f"s3://{BUCKET}/eval/missing", "--tracking-uri", uri])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"s3://{BUCKET}/eval/missing" in err[0], err
    upload_store(phantom_store, store)
    Location.of(ckpt).write_bytes(good.read_bytes())
    assert main(["evaluate", ckpt, "--store", store, "--tracking-uri", uri, "--bootstrap", "10"]) == 0
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("evaluations").experiment_id])
    assert (run.data.params["store"], run.data.params["checkpoint"]) == (store, ckpt)
    assert run.data.metrics["test/mauc"] > 0 and not (tmp_path / "s3:").exists()

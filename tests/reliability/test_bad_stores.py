"""Damaged or unfit stores are refused by `study run` before Ray starts (the probe of 2026-12-07 saw them
caught 43-124 s into the trials, or a flipped bit used silently): one `error: ...` line naming the spec's
field and the store, exit code 2, no Tune folder, no MLflow database. Real stores prepared from the phantom
set; `ray.init` is a tripwire."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from thoraxmae.cli import main
from thoraxmae.datasets.sources import load_source
from thoraxmae.datasets.store import prepare_store
from thoraxmae.datasets.table import keep_splits

SHARD = "shards/shard-00000.arrow"


@pytest.fixture(autouse=True)
def no_ray(monkeypatch, tmp_path):
    import ray

    def tripwire(*_, **__):
        raise AssertionError("Ray started for a store that should have been refused before it")

    monkeypatch.setattr(ray, "init", tripwire)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("THORAXMAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def flip_a_bit(store: Path, _phantom: Path) -> None:
    data = bytearray((store / SHARD).read_bytes())
    data[len(data) // 2] ^= 0x01
    (store / SHARD).write_bytes(bytes(data))


def truncate(store: Path, _phantom: Path) -> None:
    data = (store / SHARD).read_bytes()
    (store / SHARD).write_bytes(data[: len(data) // 2])


def kept(splits: list[str]):
    def make(store: Path, phantom_nih: Path) -> None:
        shutil.rmtree(store)
        prepare_store(keep_splits(load_source("nih", phantom_nih, split_seed=0), splits), store, size=64,
                      progress=False)
    return make


def spec(tmp: Path, store: Path, stage: str = "finetune", **finetune) -> Path:
    raw = {"name": "s", "stage": stage, "data": {"store": str(store)},
           "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8, "depth": 2},
           "finetune": {"epochs": 2, "warmup_epochs": 1, "batch_size": 16, **finetune},
           "search": {"num_samples": 2,
                      "space": {"finetune.layer_decay": {"type": "float", "low": 0.5, "high": 0.9}}},
           "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}"}, "storage_path": str(tmp / "studies")}
    if stage == "pipeline":
        raw["pretrain"] = {"epochs": 1, "warmup_epochs": 0, "batch_size": 16}
        raw["model"].update({"decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2})
    path = tmp / "s.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(("damage", "stage", "finetune", "message"), [
    (flip_a_bit, "finetune", {}, (r"data\.store: .*/store/shards/shard-00000\.arrow: contents do not match "
                                  r"the hash "
                                 r"recorded when it was written \(damaged\)")),
    (truncate, "finetune", {}, (r"data\.store: .*/store: shards/shard-00000\.arrow is \d+ bytes, "
                                r"manifest\.json "
                               r"records \d+ \(truncated or replaced\)")),
    (kept(["test"]), "finetune", {}, (r"data\.store: .*/store: split 'train' \(data\.train_split\) is empty "
                                     r"\(images per split: train 0, val 0, test \d+\)")),
    (kept(["train"]), "finetune", {}, r"data\.store: .*/store: split 'val' \(data\.val_split\) is empty"),
    (kept(["test"]), "pipeline", {}, r"data\.store: .*/store: split 'train' \(data\.train_split\) is empty"),
    (None, "finetune", {"batch_size": 4000}, (r"data\.store: .*/store: finetune\.batch_size=4000 is more "
                                              r"than split "
                                             r"'train' holds \((\d+)\); .* lower finetune\.batch_size to at "
                                             r"most \1")),
])
def test_study_run_refuses_an_unfit_store_before_ray(phantom_store, phantom_nih, tmp_path, capsys, damage,
                                                     stage,
                                                      finetune, message):
    store = Path(shutil.copytree(phantom_store, tmp_path / "store"))
    if damage is not None:
        damage(store, phantom_nih)
    assert main(["study", "run", str(spec(tmp_path, store, stage, **finetune))]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith(f"error: {tmp_path / 's.yaml'}: ") and re.search(message, line), line
    assert not (tmp_path / "studies").exists() and not (tmp_path / "mlflow.db").exists()


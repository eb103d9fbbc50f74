"""The pre-training registry: content keys, finished entries, damaged checkpoints, the per-study
coordinator."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from thoraxmae.datasets.config import DataConfig
from thoraxmae.study.errors import SpecError
from thoraxmae.study.registry import Registry, _Coordinator, key_payload, pretrain_key
from thoraxmae.trainers.config import ModelConfig, PretrainConfig


def _key(store, **pretrain) -> str:
    model = ModelConfig(name="vit_tiny_test", img_size=64, patch_size=8)
    return pretrain_key(key_payload(model, DataConfig(store=store),
                                    PretrainConfig(epochs=2, warmup_epochs=1, **pretrain), workers=1))


def test_key_covers_the_recipe_and_the_store_content_not_bookkeeping(store, tmp_path):
    base = _key(store, mask_ratio=0.9)
    assert base == _key(store, mask_ratio=0.9)
    assert base != _key(store, mask_ratio=0.75)
    # how often it saves does not change weights
    assert base == _key(store, mask_ratio=0.9, checkpoint_every=5)
    (store / "manifest.json").write_text(json.dumps({"content_hash": "other"}))
    assert base != _key(store, mask_ratio=0.9)  # a rebuilt store is another pre-training
    moved = tmp_path / "moved"
    store.rename(moved)
    (moved / "manifest.json").write_text(json.dumps({"content_hash": "abc123"}))
    assert base == _key(moved, mask_ratio=0.9)  # the same content elsewhere is the same pre-training


def test_store_without_manifest_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError, match="manifest.json: cannot read the store's content hash"):
        _key(tmp_path)


def _finished(registry: Registry, key: str) -> str:
    run = registry.run_dir(key).path / "checkpoint_000001"
    run.mkdir(parents=True)
    torch.save({"model": {"w": torch.zeros(3)}}, run / "checkpoint.pt")
    registry.prepare(key, {"pretrain": {"mask_ratio": 0.9}})
    registry.record(key, str(run / "checkpoint.pt"), {"pretrain/loss": 0.5, "cost/cpu_hours": 0.01, "x": [1]},
                    {"study": "s", "trial_id": "t1"})
    return str(run / "checkpoint.pt")


def test_record_lookup_resolve(tmp_path):
    registry = Registry(tmp_path)
    ckpt = _finished(registry, "k1abcdef")
    entry = registry.lookup("k1abcdef")
    assert entry.checkpoint == ckpt and entry.cost == {"cost/cpu_hours": 0.01} and "x" not in entry.metrics
    assert entry.recipe == {"mask_ratio": 0.9} and entry.source["trial_id"] == "t1"
    assert registry.resolve("registry:k1ab").key == "k1abcdef"
    assert registry.lookup("nosuch") is None
    with pytest.raises(SpecError, match=r"'registry:zz' matches no registered pre-training .*registered: "
                                        r"k1abcdef"):
        registry.resolve("registry:zz")


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_missing_or_damaged_checkpoint_is_discarded_with_a_warning(tmp_path, caplog, damage):
    registry = Registry(tmp_path)
    ckpt = _finished(registry, "k2")
    path = registry.lookup("k2").checkpoint
    if damage == "delete":
        import os
        os.remove(path)
    else:
        data = Path(ckpt).read_bytes()
        Path(ckpt).write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        assert registry.lookup("k2") is None
    assert "discarding it, it will be pre-trained again" in caplog.text
    assert not registry.folder("k2").exists()  # the half-valid Train run goes too: it is rebuilt from scratch


def test_coordinator_grants_one_trial_and_expires_dead_holders():
    c = _Coordinator(lease_s=0.05)
    assert c.claim("k", "t1") == "t1"
    assert c.claim("k", "t2") == "t1"  # t1 holds it: t2 waits
    assert c.claim("k", "t1") == "t1"  # renewal
    c.release("k", "t1")
    assert c.claim("k", "t2") == "t2"
    import time
    time.sleep(0.1)  # t2 died without releasing: its lease runs out
    assert c.claim("k", "t3") == "t3"


def test_a_registry_reference_resolves_to_the_checkpoint_and_survives_spec_loading(tmp_path, store):
    from thoraxmae.study.registry import resolve_init
    from thoraxmae.study.spec.load import load_spec

    registry = Registry(tmp_path / "studies")
    ckpt = _finished(registry, "abcdef123456")
    assert resolve_init(tmp_path / "studies", "registry:abcdef") == Path(ckpt)
    assert resolve_init(tmp_path / "studies", tmp_path / "x.pt") == tmp_path / "x.pt"
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(f"name: fromreg\nstage: finetune\ndata: {{store: {store}}}\n"
                         f"model: {{name: vit_tiny_test}}\nfinetune: {{epochs: 2, warmup_epochs: 1, "
                         f"init: 'registry:abcdef'}}\nstorage_path: {tmp_path / 'studies'}\n")
    spec = load_spec(spec_file, check_files=False)
    assert str(spec.finetune.init) == "registry:abcdef"  # not turned into <folder>/registry:abcdef

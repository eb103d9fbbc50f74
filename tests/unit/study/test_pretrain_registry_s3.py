"""The pre-training registry on object storage (a real S3-compatible server, moto's server mode on 127.0.0.1):
entries recorded, found, resolved and checked by existence and recorded size, never by downloading the
checkpoint; pretrain_once hands Train a Location and passes checkpoint URIs through untouched."""
from __future__ import annotations

import io
import json
import logging
from types import SimpleNamespace

import pytest
import torch

from tests.s3_server import BUCKET
from thoraxmae.datasets.storage import Location
from thoraxmae.study.registry import ENTRY_FILE, Registry, resolve_init
from thoraxmae.study.run import pipeline
from thoraxmae.trainers.config import PretrainConfig

STORAGE = f"s3://{BUCKET}/tune"


@pytest.fixture()
def registry(s3, request):
    storage = f"{STORAGE}/{request.node.name.replace('[', '-').rstrip(']')}"  # one storage per test
    return Registry(storage)


def _checkpoint() -> bytes:
    buf = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(3)}}, buf)
    return buf.getvalue()


def _finished(registry: Registry, key: str) -> str:
    ckpt = registry.run_dir(key) / "checkpoint_000001" / "checkpoint.pt"
    ckpt.write_bytes(_checkpoint())
    registry.prepare(key, {"pretrain": {"mask_ratio": 0.9}})
    registry.record(key, ckpt.uri, {"pretrain/loss": 0.5, "cost/cpu_hours": 0.01},
                    {"study": "s", "trial_id": "t1"})
    return ckpt.uri


def test_record_lookup_entries_resolve_on_s3(registry):
    ckpt = _finished(registry, "k1abcdef")
    assert registry.folder("k1abcdef").uri == f"{registry.root.uri}/k1abcdef"
    assert registry.root.uri.startswith(f"{STORAGE}/") and ckpt.startswith("s3://")
    entry = registry.lookup("k1abcdef")
    assert entry.checkpoint == ckpt and entry.checkpoint_bytes == len(_checkpoint())
    assert entry.recipe == {"mask_ratio": 0.9} and entry.cost == {"cost/cpu_hours": 0.01}
    assert [e.key for e in registry.entries()] == ["k1abcdef"]
    assert registry.resolve("registry:k1ab").key == "k1abcdef"
    assert resolve_init(registry.root.parent.uri, "registry:k1ab") == ckpt  # the URI itself, not a Path
    assert resolve_init(registry.root.parent.uri, ckpt) == ckpt
    assert registry.lookup("nosuch") is None


@pytest.mark.parametrize("damage", ["delete", "resize"])
def test_missing_or_resized_checkpoint_object_is_discarded_with_a_warning(registry, caplog, damage):
    ckpt = Location.of(_finished(registry, "k2"))
    if damage == "delete":
        ckpt.unlink()
    else:
        ckpt.write_bytes(_checkpoint()[:100])
    with caplog.at_level(logging.WARNING):
        assert registry.lookup("k2") is None
    assert ("is missing" if damage == "delete" else "is damaged") in caplog.text
    assert "discarding it, it will be pre-trained again" in caplog.text
    assert not registry.folder("k2").exists() and registry.entries() == []


def test_an_entry_without_its_recorded_size_still_loads(registry):
    """entry.json files written before checkpoint_bytes existed: checked by existence alone on S3."""
    _finished(registry, "k3")
    entry_file = registry.folder("k3") / ENTRY_FILE
    old = json.loads(entry_file.read_text())
    del old["checkpoint_bytes"]
    entry_file.write_text(json.dumps(old))
    assert registry.lookup("k3").checkpoint_bytes is None


class _FakeCoordinator:
    """The coordinator actor's calls, answered at once (every key is free)."""

    def __init__(self):
        self.claim = SimpleNamespace(remote=lambda key, trial: trial)
        self.release = SimpleNamespace(remote=lambda key, trial: None)


def test_pretrain_once_runs_in_the_registry_on_s3_then_reuses(registry, monkeypatch):
    import ray

    coordinator = _FakeCoordinator()
    monkeypatch.setattr(ray, "get_actor", lambda name: coordinator)
    monkeypatch.setattr(ray, "get", lambda value: value)
    monkeypatch.setattr(pipeline, "trial_key", lambda spec, cfg: ("k4", {"pretrain": {}}))
    spec = SimpleNamespace(storage_path=registry.root.parent.uri, name="s")
    seen = []

    def run_phase(name, runs_dir, key, cfg):
        seen.append(runs_dir)
        folder = registry.run_dir(key) / "checkpoint_000002"
        (folder / pipeline.CHECKPOINT_FILE).write_bytes(_checkpoint())
        return {"checkpoint": folder.uri, "metrics": {"pretrain/loss": 0.4}, "history": []}

    cfg = PretrainConfig(epochs=2, warmup_epochs=1)  # cosine: keyed with its length, never continued
    done, key, reused = pipeline.pretrain_once(spec, cfg, "t1", run_phase)
    assert (key, reused) == ("k4", False) and seen == [registry.folder("k4")]
    assert registry.lookup("k4").checkpoint == f"{done['checkpoint']}/{pipeline.CHECKPOINT_FILE}"
    again, _, reused = pipeline.pretrain_once(spec, cfg, "t2", run_phase)
    assert (reused and again["checkpoint"] == done["checkpoint"] and again["trial_id"] == "t1"
            and len(seen) == 1)

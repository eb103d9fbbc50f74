"""Registry keys (issue 21 item 5, issue 20): what does not change the weights is not in the key, the code
version is, and a constant (horizon-free) pre-training is keyed without its length."""
from __future__ import annotations

import sys

import torch

from thoraxmae.datasets.config import DataConfig
from thoraxmae.study import registry as reg
from thoraxmae.study.registry import Registry, entry_epochs, entry_id, key_payload, pretrain_key
from thoraxmae.trainers.config import ModelConfig, PretrainConfig


def _key(store, model=None, data=None, **pretrain) -> str:
    model = model or ModelConfig(name="vit_tiny_test")
    fields = {"epochs": 4, "warmup_epochs": 1, **pretrain}
    return pretrain_key(key_payload(model, DataConfig(store=store, **(data or {})), PretrainConfig(**fields),
                                    workers=1))


def test_what_pretraining_never_reads_is_not_in_the_key(store):
    base = _key(store)
    assert base == _key(store, data={"val_split": "test", "test_split": "val"})
    assert base == _key(store, model=ModelConfig(name="vit_tiny_test", global_pool="token"))
    from thoraxmae.trainers.models.presets import resolve_model

    r = resolve_model(ModelConfig(name="vit_tiny_test"))
    explicit = ModelConfig(name="vit_tiny_test", embed_dim=r.embed_dim, depth=r.depth,
                           decoder_depth=r.decoder_depth)
    assert base == _key(store, model=explicit)  # a preset's value written out is the same model
    assert base != _key(store, model=ModelConfig(name="vit_tiny_test", depth=r.depth + 1))
    # cosine: the length decides the weights
    assert base != _key(store, seed=1) and base != _key(store, epochs=5)


def test_a_constant_key_has_no_length_and_its_entries_do(store):
    a = PretrainConfig(epochs=2, warmup_epochs=1, schedule="constant")
    b = a.model_copy(update={"epochs": 8})
    assert _key(store, epochs=2, schedule="constant") == _key(store, epochs=8, schedule="constant")
    key = _key(store, epochs=2, schedule="constant")
    assert entry_id(key, a) == f"{key}-e2" and entry_id(key, b) == f"{key}-e8"
    assert entry_epochs(f"{key}-e8", key) == 8 and entry_epochs(key, key) is None
    assert entry_id(key, PretrainConfig(epochs=2, warmup_epochs=1)) == key  # cosine: one entry per key


def test_latest_entry_is_the_longest_below_the_target(tmp_path):
    registry = Registry(tmp_path)
    for n in (1, 2, 4):
        ckpt = tmp_path / f"c{n}.pt"
        torch.save({"model": {}}, ckpt)
        registry.prepare(f"kk-e{n}", {})
        reg._write_json(registry.folder(f"kk-e{n}") / reg.ENTRY_FILE,
                        {"key": f"kk-e{n}", "checkpoint": str(ckpt)})
    found = registry.latest("kk", 3)
    assert found is not None and found[0] == 2 and found[1].key == "kk-e2"
    assert registry.latest("kk", 0) is None


def test_code_version_follows_code_not_prose(tmp_path, monkeypatch):
    pkg = tmp_path / "fakecode"
    pkg.mkdir()
    (pkg / "__init__.py").write_text('"""doc"""\n')
    (pkg / "loop.py").write_text('"""A loop."""\ndef step(x):\n    """Step."""\n    return x + 1  # one\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(reg, "CODE_MODULES", ("fakecode",))

    def version() -> str:
        reg.code_version.cache_clear()
        sys.modules.pop("fakecode", None)
        return reg.code_version()

    first = version()
    (pkg / "loop.py").write_text('"""The loop, reworded."""\ndef step(x):\n    """Another."""\n    return x '
                                 '+ 1\n')
    assert version() == first
    (pkg / "loop.py").write_text('"""A loop."""\ndef step(x):\n    return x + 2\n')
    assert version() != first
    reg.code_version.cache_clear()

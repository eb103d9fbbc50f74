"""thoraxmae datasets: public data sources -> a prepared store -> transforms and loaders for training.

    table = load_source("nih", "/data/ChestX-ray14")            # a validated SourceTable
    prepare_store(table, Path("store/nih256"), size=256)          # decode once, uint8 Arrow shards
    ds = StoreDataset("store/nih256", "train", build_finetune_transform(224, 0.08, 6, True, NIH_MEAN, NIH_STD))
    loader = make_loader(ds, batch_size=128, train=True, epoch=0, rank=0, world_size=1)

`generate_phantom` writes a synthetic ChestX-ray14 in the real NIH layout (tests, demo). Names are
imported lazily, so `import datasets` stays light (no torch, timm or pyarrow until used).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataConfig": "datasets.config", "NIH_MEAN": "datasets.config", "NIH_STD": "datasets.config",
    "IMAGENET_MEAN": "datasets.config", "IMAGENET_STD": "datasets.config",
    "DataError": "datasets.errors",
    "SourceTable": "datasets.table", "concat_tables": "datasets.table",
    "load_source": "datasets.sources", "SOURCES": "datasets.sources", "NIH_LABELS": "datasets.sources",
    "generate_phantom": "datasets.phantom",
    "load_gray": "datasets.images",
    "prepare_store": "datasets.store", "open_store": "datasets.store", "Store": "datasets.store",
    "build_pretrain_transform": "datasets.transforms", "build_finetune_transform": "datasets.transforms",
    "build_eval_transform": "datasets.transforms", "randaug_config": "datasets.transforms",
    "StoreDataset": "datasets.loader", "make_loader": "datasets.loader",
}

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NIH_LABELS",
    "NIH_MEAN",
    "NIH_STD",
    "SOURCES",
    "DataConfig",
    "DataError",
    "SourceTable",
    "Store",
    "StoreDataset",
    "build_eval_transform",
    "build_finetune_transform",
    "build_pretrain_transform",
    "concat_tables",
    "generate_phantom",
    "load_gray",
    "load_source",
    "make_loader",
    "open_store",
    "prepare_store",
    "randaug_config",
]



def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'datasets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

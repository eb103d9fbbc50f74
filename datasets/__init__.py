"""thoraxmae datasets: public data sources -> a prepared store -> transforms and loaders for training.

    table = load_source("nih", "/data/ChestX-ray14")          # a validated SourceTable
    prepare_store(table, Path("store/nih768"), size=768)        # decode once, uint8 Arrow shards
    check_store("store/nih768")                                 # cheap: manifest, format version, shard files
    check_store_use("store/nih768", [SplitNeed("train", "data.train_split", batch_size=128)])  # before Ray
    ds = StoreDataset("store/nih768", "train",
                      build_finetune_transform(224, 0.08, 6, True, NIH_MEAN, NIH_STD))
    loader = make_loader(ds, batch_size=128, train=True, epoch=0, rank=0, world_size=1)

`generate_phantom` writes a synthetic ChestX-ray14 in the real NIH layout (tests, demo). Names are
imported lazily, so `import thoraxmae.datasets` stays light (no torch, timm or pyarrow until used).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataConfig": "thoraxmae.datasets.config", "NIH_MEAN": "thoraxmae.datasets.config",
    "NIH_STD": "thoraxmae.datasets.config",
    "IMAGENET_MEAN": "thoraxmae.datasets.config", "IMAGENET_STD": "thoraxmae.datasets.config",
    "DataError": "thoraxmae.datasets.errors",
    "SourceTable": "thoraxmae.datasets.table", "concat_tables": "thoraxmae.datasets.table",
    "load_source": "thoraxmae.datasets.sources", "SOURCES": "thoraxmae.datasets.sources",
    "NIH_LABELS": "thoraxmae.datasets.sources",
    "generate_phantom": "thoraxmae.datasets.phantom",
    "load_gray": "thoraxmae.datasets.images",
    "prepare_store": "thoraxmae.datasets.store", "open_store": "thoraxmae.datasets.store",
    "Store": "thoraxmae.datasets.store",
    "check_store": "thoraxmae.datasets.store_read", "verify_store": "thoraxmae.datasets.store",
    "check_store_use": "thoraxmae.datasets.store_check", "SplitNeed": "thoraxmae.datasets.store_check",
    "detail_kept": "thoraxmae.datasets.resolution", "DEFAULT_STORE_SIZE": "thoraxmae.datasets.resolution",
    "build_pretrain_transform": "thoraxmae.datasets.transforms",
    "build_finetune_transform": "thoraxmae.datasets.transforms",
    "build_eval_transform": "thoraxmae.datasets.transforms",
    "randaug_config": "thoraxmae.datasets.transforms",
    "StoreDataset": "thoraxmae.datasets.loader", "make_loader": "thoraxmae.datasets.loader",
}

__all__ = [
    "DEFAULT_STORE_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NIH_LABELS",
    "NIH_MEAN",
    "NIH_STD",
    "SOURCES",
    "DataConfig",
    "DataError",
    "SourceTable",
    "SplitNeed",
    "Store",
    "StoreDataset",
    "build_eval_transform",
    "build_finetune_transform",
    "build_pretrain_transform",
    "check_store",
    "check_store_use",
    "concat_tables",
    "detail_kept",
    "generate_phantom",
    "load_gray",
    "load_source",
    "make_loader",
    "open_store",
    "prepare_store",
    "randaug_config",
    "verify_store",
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

"""Stores at full detail: `study run`, `finetune` and `pretrain` warn before Ray when a store is smaller than
the
spec's smallest crops need (study/spec/detail.py over datasets.resolution.store_detail_warning)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_store_manifest
from thoraxmae.study.spec.detail import smallest_crop_min, store_detail_warnings
from thoraxmae.study.spec.load import load_spec

# vit_tiny_test reads 64 px: a crop of scale s keeps 0.9 of the reference's detail from a store of side
# 0.9 * 64 / sqrt(s): 204 px at 0.08, 129 px at 0.2, 82 px at 0.5.


def _store(folder: Path, size: int, half_copies: int = 10) -> Path:
    write_store_manifest(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "size": size, "half_copies": half_copies}))
    return folder


def _spec(tmp_path: Path, stage: str, store_size: int, space: dict | None = None, half_copies: int = 10,
          **phases) -> Path:
    _store(tmp_path / "store", store_size, half_copies)
    d = {"name": "detail", "stage": stage, "data": {"store": "store"},
         "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8},
         "search": {"num_samples": 2, "space": space or {}}, **phases}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


def test_a_fine_tuning_store_below_the_size_its_smallest_crop_needs_is_named_with_both_sizes(tmp_path):
    spec = load_spec(_spec(tmp_path, "finetune", 64,
                           finetune={"epochs": 2, "warmup_epochs": 1, "crop_min": 0.08}))
    store = tmp_path / "store"
    assert store_detail_warnings(spec) == [
        (f"data.store: {store}: images stored at 64 px, below the 204 px that keeps >= 0.9 of the "
         "reference's "
        "detail for fine-tuning crops down to crop_min=0.08 at 64 px (this store keeps 0.28; docs/paper.md "
        "\"Crops and stored resolution\"); re-prepare it with `thoraxmae data prepare ... --size 768`")]


@pytest.mark.parametrize("store_size, half_copies, expected", [
    (204, 10, []),  # exactly the size needed
    (203, 10, ["below the 204 px"]),
    (64, 0, []),  # no image shrank: the store holds the originals, the reference's own detail
])
def test_the_warning_threshold_and_stores_that_hold_the_originals(tmp_path, store_size, half_copies,
                                                                  expected):
    spec = load_spec(_spec(tmp_path, "finetune", store_size, half_copies=half_copies,
                           finetune={"epochs": 2, "warmup_epochs": 1}))
    lines = store_detail_warnings(spec)
    assert len(lines) == len(expected) and all(e in line for e, line in zip(expected, lines, strict=True))


def test_a_searched_crop_min_counts_its_lowest_value_and_a_single_run_its_fixed_one(tmp_path):
    space = {"finetune.crop_min": {"type": "float", "low": 0.2, "high": 0.6}}
    spec = load_spec(_spec(tmp_path, "finetune", 100, space,
                           finetune={"epochs": 2, "warmup_epochs": 1, "crop_min": 0.5}))
    assert (smallest_crop_min(spec, "finetune") == 0.2
            and smallest_crop_min(spec, "finetune", searched=False) == 0.5)
    (line,) = store_detail_warnings(spec)  # a study draws crops down to 0.2: 129 px needed
    assert "below the 129 px" in line and "crop_min=0.2 " in line
    # `finetune` runs 0.5: 82 px suffice
    assert store_detail_warnings(spec, ("finetune",), searched=False) == []


def test_one_store_serving_both_phases_is_named_once_for_the_neediest(tmp_path, capsys):
    from thoraxmae.cli.study import warn_store_detail

    spec = load_spec(_spec(tmp_path, "pipeline", 64,
                           pretrain={"epochs": 2, "warmup_epochs": 1, "crop_min": 0.5},
                           finetune={"epochs": 2, "warmup_epochs": 1, "crop_min": 0.08}))
    (line,) = store_detail_warnings(spec)
    assert "below the 204 px" in line and "fine-tuning" in line
    (pre,) = store_detail_warnings(spec, ("pretrain",))
    assert "below the 82 px" in pre and "pre-training crops down to crop_min=0.5" in pre
    warn_store_detail(spec)
    assert capsys.readouterr().err == f"warning: {line}\n"

"""Stores checked before Ray (datasets.store_check: sizes, split counts, the batch against the split, from the
manifest alone) and bit by bit on first use on a node (datasets.store_verify: cached by the manifest's hash).
Real stores prepared from the phantom set; each damage is done to a copy of the file."""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.sources import load_source
from thoraxmae.datasets.store import open_store, prepare_store
from thoraxmae.datasets.store_check import SplitNeed, check_store_use
from thoraxmae.datasets.store_verify import manifest_hash, marker_path, verify_once
from thoraxmae.datasets.table import keep_splits

SHARD = "shards/shard-00000.arrow"
TRAIN = SplitNeed("train", "data.train_split", batch_size=16, workers=1, batch_field="finetune.batch_size")
VAL = SplitNeed("val", "data.val_split")


@pytest.fixture(autouse=True)
def node_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("THORAXMAE_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture()
def store(phantom_store, tmp_path) -> Path:
    """A copy of the 240-image phantom store (one shard; counts train/val/test from its manifest)."""
    return Path(shutil.copytree(phantom_store, tmp_path / "store"))


def counts(store: Path) -> dict[str, int]:
    return json.loads((store / "manifest.json").read_text())["counts"]


def edit_manifest(store: Path, **changes) -> None:
    m = json.loads((store / "manifest.json").read_text())
    m.update(changes)
    (store / "manifest.json").write_text(json.dumps(m))


def truncate(store: Path) -> None:
    shard = store / SHARD
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


def truncate_old_store(store: Path) -> None:
    """A store prepared before shard sizes were recorded, then truncated: the Arrow footer is gone."""
    m = json.loads((store / "manifest.json").read_text())
    for entry in m["shards"]:
        entry.pop("bytes")
    (store / "manifest.json").write_text(json.dumps(m))
    truncate(store)


def test_an_intact_store_passes_and_records_its_shard_sizes(store):
    manifest = check_store_use(store, [TRAIN, VAL, SplitNeed("test", "data.test_split", batch_size=0)])
    assert manifest["shards"][0]["bytes"] == (store / SHARD).stat().st_size
    assert sum(manifest["counts"].values()) == manifest["images"] == 240


@pytest.mark.parametrize(("damage", "needs", "message"), [
    (truncate, [TRAIN], (r"data\.store \(.*store\): shards/shard-00000\.arrow is \d+ bytes, manifest\.json "
                         r"records "
                        r"\d+ \(truncated or replaced\)")),
    (truncate_old_store, [TRAIN], r"data\.store \(.*store\): .*shard-00000\.arrow: cannot read store shard"),
    (lambda s: edit_manifest(s, images=999), [TRAIN],
     r"manifest\.json counts 240 images by split and 999 in all, but its shards hold 240"),
    (lambda s: edit_manifest(s, size=True), [TRAIN],
     r"manifest\.json size=True, expected an image side in \[8, 4096\]"),
    (lambda s: None, [SplitNeed("train", "data.train_split", 10_000, 1, "finetune.batch_size")],
     (r"finetune\.batch_size=10000 is more than split 'train' holds \((\d+)\); .* lower finetune\.batch_size "
      r"to at "
     r"most \1$")),
    (lambda s: None, [SplitNeed("train", "data.train_split", 100, 2, "pretrain.batch_size")],
     r"pretrain\.batch_size=100 is more than split 'train' holds \(\d+ per worker \(2 workers\)\)"),
    (lambda s: None, [SplitNeed("training", "data.train_split")],
     r"^data\.train_split: 'training' is not a split of a store; expected one of \['train', 'val', 'test'\]"),
    (lambda s: shutil.rmtree(s), [TRAIN], (r"^data\.store: .*store: not a prepared store \(folder not "
                                          r"found\)")),
])
def test_a_store_a_run_cannot_use_is_refused_from_its_manifest(store, damage, needs, message):
    damage(store)
    with pytest.raises(DataError, match=message):
        check_store_use(store, needs)


@pytest.mark.parametrize(("kept", "need", "message"), [
    (["test"], TRAIN, (r"split 'train' \(data\.train_split\) is empty \(images per split: train 0, val 0, "
                       r"test \d+\); "
                      r"prepare a store that has it, or set data\.train_split")),
    (["train"], VAL, (r"split 'val' \(data\.val_split\) is empty \(images per split: train \d+, val 0, test "
                     r"0\)")),
])
def test_an_empty_split_is_refused(phantom_nih, tmp_path, kept, need, message):
    out = tmp_path / "kept"
    prepare_store(keep_splits(load_source("nih", phantom_nih, split_seed=0), kept), out, size=32,
                  progress=False)
    with pytest.raises(DataError, match=message):
        check_store_use(out, [need])
    check_store_use(out, [SplitNeed(need.split, need.field, batch_size=0)])  # an optional split may be empty


def flip_a_bit(store: Path) -> None:
    shard = store / SHARD
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the pixel data: the file still parses
    shard.write_bytes(bytes(data))


def test_a_flipped_bit_passes_the_manifest_checks_and_is_caught_on_first_use(store):
    flip_a_bit(store)
    check_store_use(store, [TRAIN, VAL])  # sizes and counts are unchanged: only the hashes can tell
    with pytest.raises(DataError, match=r"shard-00000\.arrow: contents do not match the hash recorded when "
                                        r"it was "
                                        r"written \(damaged\)"):
        open_store(store)


def test_the_bit_level_check_runs_once_per_node_until_a_shard_changes(store, node_cache):
    manifest = json.loads((store / "manifest.json").read_text())
    assert verify_once(store, manifest) is True  # first use on this node: hashed
    assert marker_path(store) == node_cache / f"verified-{manifest_hash(store)}.json"
    assert verify_once(store, manifest) is False  # the marker says it is as it was: not hashed
    open_store(store)  # and opening it does not hash it again either
    assert verify_once(store, manifest) is False
    flip_a_bit(store)  # written since: the stamps differ, so it is hashed again, and caught
    with pytest.raises(DataError, match="damaged"):
        verify_once(store, manifest)


def test_a_copy_of_a_verified_store_is_verified_on_its_own(store, tmp_path):
    manifest = json.loads((store / "manifest.json").read_text())
    assert verify_once(store, manifest) is True
    copy = Path(shutil.copytree(store, tmp_path / "copy"))
    flip_a_bit(copy)  # the same manifest, so the same marker file, but other shard files
    with pytest.raises(DataError, match=r"copy/shards/shard-00000\.arrow: contents do not match"):
        verify_once(copy, manifest)
    assert verify_once(store, manifest) is False


def test_an_unwritable_cache_still_verifies(store, monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("THORAXMAE_CACHE_DIR", str(blocker / "cache"))  # cannot be created
    manifest = json.loads((store / "manifest.json").read_text())
    assert verify_once(store, manifest) is True and verify_once(store, manifest) is True
    flip_a_bit(store)
    with pytest.raises(DataError, match="damaged"):
        verify_once(store, manifest)
    assert not os.path.exists(blocker / "cache")


def test_data_verify_checks_a_store_on_demand(store, capsys, node_cache):
    from thoraxmae.cli import main

    assert main(["data", "verify", str(store)]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"store {re.escape(str(store))}: 1 shard\(s\), 240 images match the manifest's "
                     r"hashes", out), out
    assert marker_path(store).is_file()  # recorded: the next open on this node skips the hashing
    flip_a_bit(store)
    assert main(["data", "verify", str(store)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [(f"error: {store / SHARD}: contents do not match the hash recorded when it was written "
                    "(damaged); "
                   "re-run `thoraxmae data prepare` to rebuild it")]

"""Stores on object storage, against a real S3-compatible server (moto's server mode on 127.0.0.1):
`data prepare --out s3://...` uploads, `open_store` reads the node-local cached copy, a cache hit reads
no shard, a changed cached shard is fetched again, a damaged upload is refused, least-recently-used
eviction keeps the cache within THORAXMAE_CACHE_GB."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.s3_server import BUCKET
from thoraxmae.cli import main
from thoraxmae.datasets.config import DataConfig
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.remote import filesystem, local_store
from thoraxmae.datasets.store import check_store, open_store, verify_store


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("THORAXMAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("THORAXMAE_CACHE_GB", raising=False)
    return tmp_path / "cache"


def _prepare(phantom_nih, uri: str, size: int = 64) -> None:
    assert main(["data", "prepare", str(phantom_nih), "--format", "nih", "--size", str(size), "--shard-size",
                 "64",
                 "--out", uri, "--quiet"]) == 0


@pytest.fixture(scope="module")
def s3_store(s3, phantom_nih) -> str:
    uri = f"s3://{BUCKET}/stores/nih64"
    _prepare(phantom_nih, uri)
    return uri


def test_prepare_uploads_and_open_reads_the_cached_copy(s3_store, phantom_nih, cache, tmp_path):
    manifest = check_store(s3_store)  # remote manifest and shard objects, nothing fetched
    assert not cache.exists()
    _prepare(phantom_nih, str(tmp_path / "local"))  # the same store on local disk
    local = open_store(tmp_path / "local")
    assert manifest["content_hash"] == local.manifest["content_hash"]
    store = open_store(s3_store)
    assert store.path == cache / manifest["content_hash"]
    assert len(store) == len(local) and store.label_names == local.label_names
    assert np.array_equal(store.image(5), local.image(5)) and np.array_equal(store.labels, local.labels)
    assert sorted(p.name for p in (store.path / "shards").iterdir()) == [e["file"].split("/")[1]
                                                                       for e in manifest["shards"]]
    assert verify_store(s3_store) == manifest["content_hash"]
    assert json.loads((store.path / "manifest.json").read_text()) == manifest


def test_a_cache_hit_fetches_no_shard(s3, phantom_nih, cache):
    uri = f"s3://{BUCKET}/stores/hit"
    _prepare(phantom_nih, uri)
    first = open_store(uri)
    filesys, root = filesystem(uri)
    filesys.delete_dir_contents(f"{root}/shards")  # only the manifest is left on the server
    again = open_store(uri)
    assert again.path == first.path and np.array_equal(again.image(3), first.image(3))
    with pytest.raises(DataError, match=r"/shards/shard-00000.arrow: store shard missing \(listed in "
                                        r"manifest"):
        check_store(uri)


def test_a_changed_cached_shard_is_fetched_again(s3_store, cache):
    folder = local_store(s3_store)
    shard = folder / "shards" / "shard-00001.arrow"
    original = shard.read_bytes()
    shard.write_bytes(original[:1000])  # truncated in the cache
    assert local_store(s3_store) == folder
    assert shard.read_bytes() == original
    assert not list(folder.glob("shards/*.tmp-*"))


def test_a_damaged_upload_is_refused(s3, phantom_store, cache):
    uri = f"s3://{BUCKET}/stores/damaged"
    filesys, root = filesystem(uri)
    for file in ["manifest.json"] + [f"shards/{p.name}" for p in (phantom_store / "shards").iterdir()]:
        data = bytearray((phantom_store / file).read_bytes())
        if file == "shards/shard-00000.arrow":
            data[len(data) // 2] ^= 0xFF  # one pixel byte flipped
        with filesys.open_output_stream(f"{root}/{file}") as out:
            out.write(bytes(data))
    with pytest.raises(DataError, match=r"stores/damaged/shards/shard-00000.arrow: contents do not match the "
                                        r"manifest's sha256 \(damaged upload\)"):
        open_store(uri)
    assert not list(cache.glob("*/shards/*.tmp-*"))


def test_least_recently_used_stores_are_evicted(s3, s3_store, phantom_nih, cache, monkeypatch):
    small = f"s3://{BUCKET}/stores/nih32"
    _prepare(phantom_nih, small, size=32)
    a = local_store(s3_store)
    size_a = sum(f.stat().st_size for f in a.rglob("*") if f.is_file())
    monkeypatch.setenv("THORAXMAE_CACHE_GB", str(size_a * 1.1 / 1e9))  # room for the 64 px store, not both
    b = local_store(small)
    assert b.is_dir() and not a.exists()
    monkeypatch.setenv("THORAXMAE_CACHE_GB", str(size_a / 10 / 1e9))
    local_store(small)  # cached: no room needed
    with pytest.raises(DataError, match=r"the store needs [\d.e-]+ GB, more than the cache's limit "
                                        r"THORAXMAE_CACHE_GB="):
        local_store(s3_store)


def test_uri_errors_name_the_uri(s3, cache):
    with pytest.raises(DataError, match=rf"^s3://{BUCKET}/stores/none: not a prepared store \(no "
                                        r"manifest.json\)"):
        open_store(f"s3://{BUCKET}/stores/none")
    with pytest.raises(DataError, match=r"^bogus://x/y: cannot open this URI"):
        check_store("bogus://x/y")


def test_data_config_keeps_a_uri_and_makes_a_path_of_anything_else():
    assert DataConfig(store="s3://bucket/x").store == "s3://bucket/x"
    assert DataConfig(store="gs://bucket/x").model_dump(mode="json")["store"] == "gs://bucket/x"
    assert isinstance(DataConfig(store="rel/x").store, Path)

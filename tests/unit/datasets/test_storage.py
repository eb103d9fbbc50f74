"""datasets.storage.Location: the same file operations on a local folder, S3 (moto server) and GCS (an
emulator), and local_file's node-cache fetch; a store uploaded to gs:// is fetched and read like one on S3."""
from __future__ import annotations

import json

import pytest

from tests.object_stores import object_store
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.remote import local_store, upload_store
from thoraxmae.datasets.storage import Location, local_file, ray_storage


@pytest.fixture(params=["local", "s3", "gs"])
def root(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path / "storage")
        return
    with object_store(request.param, tmp_path / "server.log") as uri:
        yield f"{uri}/storage"


def test_location_reads_writes_lists_and_deletes(root, tmp_path):
    base = Location.of(root)
    spec = base / "study" / "spec.yaml"
    assert not spec.exists() and base.iterdir() == []
    spec.write_text("name: x\n")
    (base / "study" / "train" / "run-a" / "thoraxmae_final.json").write_text("{}")
    (base / "study" / "train" / "run-b" / "thoraxmae_final.json").write_text("{}")
    assert spec.is_file() and spec.read_text() == "name: x\n" and spec.size() == 8
    assert (base / "study").is_dir() and str(spec) == f"{root}/study/spec.yaml" and spec.name == "spec.yaml"
    if not root.startswith("gs://"):  # the GCS emulator ignores includeTrailingDelimiter, on which pyarrow's
        # one-level GCS listing relies (real GCS returns the folder markers that write_bytes creates)
        assert [c.name for c in (base / "study").iterdir()] == ["spec.yaml", "train"]
    assert [str(m.parent.name) for m in base.walk_files("thoraxmae_final.json")] == ["run-a", "run-b"]
    # Ray's path inside the filesystem, back to what users see
    assert base.child_uri(spec.fs_path) == str(spec)
    assert spec.parent.parent.uri == base.uri
    (base / "study" / "train").rmtree()
    assert ([c.name for c in (base / "study").iterdir()] == ["spec.yaml"]
            and not (base / "study" / "train").exists())
    spec.unlink()
    assert not spec.exists()
    assert ray_storage(base)["storage_path"] == (base.uri if base.is_local else base.fs_path)


def test_local_file_fetches_once_and_again_when_the_object_changes(root, tmp_path, monkeypatch):
    monkeypatch.setenv("THORAXMAE_CACHE_DIR", str(tmp_path / "cache"))
    ckpt = Location.of(root) / "ckpt" / "mae.pt"
    ckpt.write_bytes(b"v1")
    first = local_file(str(ckpt))
    assert first.read_bytes() == b"v1"
    if ckpt.is_local:
        assert first == ckpt.path  # a local file is used where it is
        return
    assert first.parent.parent == tmp_path / "cache" and first.parent.name.startswith("file-")
    assert local_file(str(ckpt)) == first
    ckpt.write_bytes(b"v2, longer")
    assert local_file(str(ckpt)).read_bytes() == b"v2, longer"
    with pytest.raises(DataError, match=r"/ckpt/missing\.pt: no such file on the object store"):
        local_file(str(Location.of(root) / "ckpt" / "missing.pt"))


def test_a_store_on_gcs_is_uploaded_and_fetched(phantom_store, tmp_path, monkeypatch):
    monkeypatch.setenv("THORAXMAE_CACHE_DIR", str(tmp_path / "cache"))
    with object_store("gs", tmp_path / "gcs.log") as bucket:
        upload_store(phantom_store, f"{bucket}/stores/nih64")
        folder = local_store(f"{bucket}/stores/nih64")
    manifest = json.loads((phantom_store / "manifest.json").read_text())
    assert folder.name == manifest["content_hash"]
    assert sorted(p.name for p in (folder / "shards").iterdir()) == sorted(
        p.name for p in (phantom_store / "shards").iterdir())


def test_fetched_files_share_the_stores_bound_least_recently_used_first(tmp_path, monkeypatch):
    monkeypatch.setenv("THORAXMAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("THORAXMAE_CACHE_GB", "0.0000015")  # 1500 bytes: room for one 1000-byte file
    with object_store("s3", tmp_path / "server.log") as bucket:
        a, b = Location.of(f"{bucket}/a.pt"), Location.of(f"{bucket}/b.pt")
        a.write_bytes(b"a" * 1000)
        b.write_bytes(b"b" * 1000)
        first = local_file(str(a))
        second = local_file(str(b))
        assert second.read_bytes() == b"b" * 1000 and not first.exists()  # a was evicted to make room
        with pytest.raises(DataError, match=r"needs 2e-06 GB, more than the cache's limit"):
            Location.of(f"{bucket}/big.pt").write_bytes(b"c" * 2000)
            local_file(f"{bucket}/big.pt")

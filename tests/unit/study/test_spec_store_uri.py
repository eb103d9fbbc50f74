"""An object-store URI for a store is kept as written (not folded into a local path) by load_spec."""
from __future__ import annotations

from pathlib import Path

import yaml

from thoraxmae.study.spec.load import dump_spec, load_spec


def test_store_uris_stay_uris(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "s3", "stage": "pipeline", "pretrain": {}, "data": {"store": "s3://bucket/stores/nih64"},
        "pretrain_data": {"store": "local/mix"}, "model": {"name": "vit_tiny_test"}, "finetune": {}}))
    spec = load_spec(spec_file, check_files=False)
    assert spec.data.store == "s3://bucket/stores/nih64"
    assert spec.pretrain_data.store == (tmp_path / "local" / "mix").resolve()
    spec = load_spec(spec_file, ["data.store=gs://other/x", "pretrain_data.store=s3://b/mix"],
                     check_files=False)
    assert (spec.data.store, spec.pretrain_data.store) == ("gs://other/x", "s3://b/mix")
    again = tmp_path / "again.yaml"
    again.write_text(dump_spec(spec))
    assert load_spec(again, check_files=False).data.store == "gs://other/x"
    assert isinstance(load_spec(spec_file, ["data.store=rel"], check_files=False).data.store, Path)


def test_storage_path_and_init_uris_stay_uris(tmp_path):
    """`storage_path` and `finetune.init` on object storage are kept as written, through a dump and a reload;
    a relative local storage_path still becomes an absolute Path."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "s3", "stage": "finetune", "data": {"store": "s3://b/x"},
                                         "model": {"name": "vit_tiny_test"}, "finetune": {}}))
    spec = load_spec(spec_file, ["storage_path=s3://bucket/tune", "finetune.init=s3://bucket/ckpt/mae.pt"],
                     check_files=False)
    assert (spec.storage_path, spec.finetune.init) == ("s3://bucket/tune", "s3://bucket/ckpt/mae.pt")
    again = tmp_path / "again.yaml"
    again.write_text(dump_spec(spec))
    reloaded = load_spec(again, check_files=False)
    assert (reloaded.storage_path, reloaded.finetune.init) == ("s3://bucket/tune", "s3://bucket/ckpt/mae.pt")
    assert not (tmp_path / "s3:").exists() and not (Path.cwd() / "s3:").exists()
    local = load_spec(spec_file, ["storage_path=runs"], check_files=False)
    assert local.storage_path == (Path.cwd() / "runs").resolve()

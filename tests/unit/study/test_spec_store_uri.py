"""An object-store URI for a store is kept as written (not folded into a local path) by load_spec."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from thoraxmae.study.errors import SpecError
from thoraxmae.study.spec import dump_spec, load_spec


def test_store_uris_stay_uris(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({
        "name": "s3", "stage": "pipeline", "pretrain": {}, "data": {"store": "s3://bucket/stores/nih64"},
        "pretrain_data": {"store": "local/mix"}, "model": {"name": "vit_tiny_test"}, "finetune": {}}))
    spec = load_spec(spec_file, check_files=False)
    assert spec.data.store == "s3://bucket/stores/nih64"
    assert spec.pretrain_data.store == (tmp_path / "local" / "mix").resolve()
    spec = load_spec(spec_file, ["data.store=gs://other/x", "pretrain_data.store=s3://b/mix"], check_files=False)
    assert (spec.data.store, spec.pretrain_data.store) == ("gs://other/x", "s3://b/mix")
    again = tmp_path / "again.yaml"
    again.write_text(dump_spec(spec))
    assert load_spec(again, check_files=False).data.store == "gs://other/x"
    assert isinstance(load_spec(spec_file, ["data.store=rel"], check_files=False).data.store, Path)


def test_a_storage_path_uri_is_refused_not_folded_into_a_local_path(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({"name": "s3", "stage": "finetune", "data": {"store": "s3://b/x"},
                                         "model": {"name": "vit_tiny_test"}, "finetune": {}}))
    with pytest.raises(SpecError, match=r"storage_path: .*s3://bucket/tune: an object-store URI is not supported "
                                        r"for storage_path yet; give a folder that every node reaches"):
        load_spec(spec_file, ["storage_path=s3://bucket/tune"], check_files=False)

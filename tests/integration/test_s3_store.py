"""A fine-tuning study whose data.store is only on an S3 endpoint (moto's server on 127.0.0.1): the
driver checks the remote manifest, each Train worker fetches the store into the node's cache once and
reads it memory-mapped; the study's own local Ray workers inherit the endpoint and credentials."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.study_helpers import subprocess_env, tiny_spec, trial_runs, write_spec
from tests.s3_server import BUCKET, moto_server
from thoraxmae.datasets.remote import upload_store

pytestmark = pytest.mark.integration


def test_finetune_study_reads_its_store_from_s3(phantom_store, tmp_path):
    uri = f"s3://{BUCKET}/stores/nih64"
    with moto_server(tmp_path / "moto.log") as s3:
        upload_store(phantom_store, uri)
        spec = tiny_spec(phantom_store, tmp_path, "s3store", num_samples=2)
        spec["data"]["store"] = uri
        spec["search"]["scheduler"] = {"type": "none"}
        spec_file = write_spec(spec, tmp_path / "spec.yaml")
        env = subprocess_env(**s3, THORAXMAE_CACHE_DIR=str(tmp_path / "cache"))
        done = subprocess.run([sys.executable, "-m", "thoraxmae", "study", "run", str(spec_file)], check=False, env=env,
                              capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    runs = trial_runs(spec["tracking"]["uri"], "s3store")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert {r.data.params["data.store"] for r in runs} == {uri}
    cached = list((tmp_path / "cache").iterdir())
    assert sorted(p.name for p in cached if p.is_dir()) == [json.loads(
        (phantom_store / "manifest.json").read_text())["content_hash"]]

"""A fine-tuning study whose store, storage_path and finetune.init are only on an S3 endpoint (moto's server
on 127.0.0.1): the driver checks the remote manifest and checkpoint, each Train worker fetches the store
and the checkpoint into the node's cache once; Tune's folder, the Train runs, their checkpoints and the
final markers are objects on S3, MLflow gets the checkpoints as artifacts, and `study confirm` runs from
there. The study's own local Ray workers inherit the endpoint and credentials."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.integration.study_helpers import CLI, subprocess_env, tiny_spec, trial_runs, write_spec
from tests.s3_server import BUCKET, moto_server
from thoraxmae.datasets.remote import upload_store
from thoraxmae.datasets.storage import Location
from thoraxmae.study import schema

pytestmark = pytest.mark.integration


def _encoder(path):
    import torch

    from thoraxmae.trainers.config import ModelConfig
    from thoraxmae.trainers.models import build_mae

    tiny = ModelConfig(name="vit_tiny_test", img_size=64, patch_size=8, depth=2, decoder_embed_dim=32,
                       decoder_depth=1, decoder_num_heads=2)
    torch.manual_seed(0)
    torch.save({"model": build_mae(tiny).state_dict()}, path)
    return path


def test_finetune_study_lives_on_s3(phantom_store, tmp_path):
    uri, storage, init = (f"s3://{BUCKET}/stores/nih64", f"s3://{BUCKET}/tune", f"s3://{BUCKET}/ckpt/mae.pt")
    with moto_server(tmp_path / "moto.log") as s3:
        upload_store(phantom_store, uri)
        Location.of(init).write_bytes(_encoder(tmp_path / "mae.pt").read_bytes())
        spec = tiny_spec(phantom_store, tmp_path, "s3store", num_samples=2)
        spec["data"]["store"], spec["storage_path"], spec["finetune"]["init"] = uri, storage, init
        spec["search"]["scheduler"] = {"type": "none"}
        spec["finetune"]["epochs"] = 2
        spec_file = write_spec(spec, tmp_path / "spec.yaml")
        env = subprocess_env(**s3, THORAXMAE_CACHE_DIR=str(tmp_path / "cache"))
        cli = [*CLI, "study"]
        done = subprocess.run([*cli, "run", str(spec_file)], check=False, env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        confirmed = subprocess.run([*cli, "confirm", "s3store", "--tracking-uri", spec["tracking"]["uri"],
                                    "--top", "1", "--seeds", "2"], check=False, env=env, cwd=tmp_path,
                                   capture_output=True, text=True, timeout=600)
        assert confirmed.returncode == 0, (confirmed.stdout + confirmed.stderr)[-4000:]
        root = Location.of(storage)
        markers = (root / "s3store" / "train").walk_files("thoraxmae_final.json")
        # 2 trials, 4 confirmation runs
        checkpoints = [json.loads(m.read_text())["checkpoint"] for m in markers]
        assert len(markers) == 6 and all(c.startswith(f"{storage}/s3store/train/train-") for c in checkpoints)
        assert all((Location.of(c) / "checkpoint.pt").is_file() for c in checkpoints)
        assert (root / "s3store" / "thoraxmae_spec.yaml").is_file()
        assert (root / "s3store-confirm").iterdir()  # the confirmation's Tune folder (resumable from S3)
    # nothing of the study was written to a local folder (a URI folded into a path would make ./s3:)
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "studies").exists()
    runs = trial_runs(spec["tracking"]["uri"], "s3store")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert {r.data.params["data.store"] for r in runs} == {uri}
    assert {r.data.params["finetune.init"] for r in runs} == {init}
    from mlflow import MlflowClient

    client = MlflowClient(spec["tracking"]["uri"])
    for run in runs:  # the best checkpoint reached MLflow's artifact store although it lives on S3
        assert "checkpoint" in {a.path for a in client.list_artifacts(run.info.run_id)}, run.info.run_id
    exp = client.get_experiment_by_name("s3store")
    confirm = client.search_runs([exp.experiment_id], f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_CONFIRM}'")
    assert sorted(r.info.status for r in confirm) == ["FINISHED"] * 4  # the recipe and the reference, 2 seeds
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir()
                    if p.is_dir() and not p.name.startswith("file-"))
    assert cached == [json.loads((phantom_store / "manifest.json").read_text())["content_hash"]]
    assert [p.name for p in (tmp_path / "cache").glob("file-*/*")] == ["mae.pt"]  # fetched once per node

"""`thoraxmae evaluate`: a fine-tuned checkpoint in the paper's released format (and ours, and a timm
state dict) evaluated on the phantom store reproduces the logits it was saved with, and logs one run."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from thoraxmae.cli import main as cli_main
from thoraxmae.datasets.config import NIH_MEAN, NIH_STD
from thoraxmae.datasets.loader import StoreDataset
from thoraxmae.datasets.store_read import open_store
from thoraxmae.datasets.transforms import build_eval_transform
from thoraxmae.study import schema
from thoraxmae.trainers.checkpoint_files import open_checkpoint
from thoraxmae.trainers.checkpoints import save_model
from thoraxmae.trainers.config import ModelConfig
from thoraxmae.trainers.evaluate import evaluate_checkpoint, model_config_of
from thoraxmae.trainers.metrics import mean_auc, per_class_auc
from thoraxmae.trainers.models import build_classifier, build_mae

TINY = ModelConfig(name="vit_tiny_test", depth=2)


def finetuned(store) -> torch.nn.Module:
    """A tiny ViT classifier with random (but not near-zero) head weights, so its AUCs differ per class."""
    torch.manual_seed(3)
    model = build_classifier(TINY, len(open_store(store).label_names), drop_path=0.0)
    torch.nn.init.normal_(model.head.weight, std=0.5)
    return model.eval()


def logits_on(model, store, split="test", mean=NIH_MEAN, std=NIH_STD) -> tuple[np.ndarray, StoreDataset]:
    ds = StoreDataset(store, split, build_eval_transform(64, mean, std, 3))
    with torch.no_grad():
        images = torch.stack([ds[i][0] for i in range(len(ds))])
        return model(images).numpy(), ds


def test_a_paper_format_checkpoint_reproduces_its_logits_and_logs_an_evaluation_run(phantom_store, tmp_path):
    from mlflow import MlflowClient

    model = finetuned(phantom_store)
    expected, ds = logits_on(model, phantom_store)
    path = tmp_path / "vit-s_nih_finetuned.pth"
    args = argparse.Namespace(model="vit_small_patch16", input_size=64, nb_classes=14, dataset="chestxray",
                              global_pool=True, drop_path=0.2)
    torch.save({"model": model.state_dict(), "optimizer": {}, "epoch": 74, "scaler": {}, "args": args}, path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli_main(["evaluate", str(path), "--store", str(phantom_store), "--tracking-uri", uri,
                     "--bootstrap", "50", "--batch-size", "16"]) == 0

    ev = evaluate_checkpoint(path, phantom_store, "test", bootstrap=50, batch_size=16)
    assert ev.format == "medical_mae" and ev.load.head == "loaded" and ev.load.missing == frozenset()
    assert ev.model.name == "vit_tiny_test" and (ev.model.img_size, ev.model.depth) == (64, 2)
    np.testing.assert_allclose(ev.logits, expected, rtol=0, atol=1e-5)
    saved_aucs = per_class_auc(ds.labels.numpy(), torch.from_numpy(expected).sigmoid().numpy(),
                               ds.mask.numpy())
    np.testing.assert_allclose(ev.per_class_auc, saved_aucs, rtol=0, atol=1e-9)
    assert ev.mauc == pytest.approx(mean_auc(saved_aucs), abs=1e-9) and ev.ci.unit == "patient"
    assert ev.ci.mauc[0] < ev.mauc < ev.ci.mauc[1]

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("evaluations").experiment_id])
    assert run.data.tags[schema.TAG_ROLE] == "evaluation" and run.data.tags["test/ci_unit"] == "patient"
    assert (run.data.params["checkpoint"] == str(path)
            and run.data.params["checkpoint.format"] == "medical_mae")
    assert run.data.params["store"] == str(phantom_store) and run.data.params["split"] == "test"
    assert run.data.metrics[schema.M_TEST_MAUC] == pytest.approx(ev.mauc, abs=1e-9)
    assert run.data.metrics[schema.M_TEST_MAUC_CI_LOW] == pytest.approx(ev.ci.mauc[0])
    assert run.data.metrics["test/auc/Cardiomegaly"] == pytest.approx(saved_aucs[1], abs=1e-9)
    assert ({a.path for a in client.list_artifacts(run.info.run_id)}
            == {schema.ARTIFACT_AUC_TABLE, "load_report.json"})
    assert run.info.status == "FINISHED"


def test_our_best_model_uses_its_stored_config_normalisation_and_class_order(phantom_store, tmp_path):
    model = finetuned(phantom_store)
    names = open_store(phantom_store).label_names
    expected, _ = logits_on(model, phantom_store, mean=0.4, std=0.3)
    state = model.state_dict()
    order = list(reversed(names))  # stored in another class order: evaluate puts it back
    state["head.weight"], state["head.bias"] = state["head.weight"].flip(0), state["head.bias"].flip(0)
    path = save_model(tmp_path / "best_model.pt", state, label_names=order,
                      model_config=TINY.model_dump(mode="json"),
                      normalization={"mean": 0.4, "std": 0.3})
    ev = evaluate_checkpoint(path, phantom_store, bootstrap=0)
    assert ev.format == "thoraxmae" and ev.load.head == "reordered" and ev.model == TINY
    np.testing.assert_allclose(ev.logits, expected, rtol=0, atol=1e-5)
    assert np.isnan(ev.ci.mauc[0])


def test_a_timm_state_dict_is_matched_to_a_preset_by_its_shapes(phantom_store, tmp_path):
    model = finetuned(phantom_store)
    torch.save(model.state_dict(), tmp_path / "timm.pth")
    cfg = model_config_of(open_checkpoint(tmp_path / "timm.pth"))
    assert cfg == ModelConfig(name="vit_tiny_test", img_size=64, patch_size=8, in_chans=3, embed_dim=64,
                              depth=2,
                              global_pool="avg")
    expected, _ = logits_on(model, phantom_store, split="val")
    ev = evaluate_checkpoint(tmp_path / "timm.pth", phantom_store, "val", bootstrap=0)
    assert ev.load.head == "unchecked" and ev.split == "val"
    np.testing.assert_allclose(ev.logits, expected, rtol=0, atol=1e-5)


def test_a_checkpoint_without_a_head_is_one_error_line(phantom_store, tmp_path, capsys):
    path = save_model(tmp_path / "checkpoint.pt", build_mae(TINY).state_dict(),
                      model_config=TINY.model_dump())
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli_main(["evaluate", str(path), "--store", str(phantom_store), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: has no trained head for the classes ['Atelectasis'")
    (tmp_path / "random.pth").write_bytes(b"\x00\x01" * 100)
    assert cli_main(["evaluate", str(tmp_path / "random.pth"), "--store", str(phantom_store),
                     "--tracking-uri", uri]) == 2
    assert ("random.pth: cannot be read as a checkpoint (tried thoraxmae, medical_mae, timm)"
            in capsys.readouterr().err)


def test_the_init_load_report_can_be_previewed_before_a_run(phantom_store, tmp_path):
    from thoraxmae.datasets.config import DataConfig
    from thoraxmae.trainers.config import FinetuneConfig
    from thoraxmae.trainers.errors import CheckpointError
    from thoraxmae.trainers.finetune import preview_init
    from thoraxmae.trainers.jobs import FinetuneJob

    init = save_model(tmp_path / "checkpoint.pt", build_mae(TINY).state_dict())
    job = FinetuneJob(model=TINY, data=DataConfig(store=phantom_store), finetune=FinetuneConfig(init=init))
    report = preview_init(job)
    assert report.format == "thoraxmae" and report.missing == {"fc_norm.weight", "fc_norm.bias",
                                                               "head.weight",
                                                                "head.bias"}
    assert preview_init(job.model_copy(update={"finetune": FinetuneConfig()})) is None
    wide = job.model_copy(update={"model": ModelConfig(name="vit_tiny_test", depth=3)})
    with pytest.raises(CheckpointError, match=r"checkpoint.pt \(thoraxmae\) does not fit VisionTransformer: "
                                              r"missing keys: \['blocks.2.attn.proj.bias'"):
        preview_init(wide)

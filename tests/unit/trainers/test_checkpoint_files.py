"""Checkpoint formats recognised from the content, refused files, head class order, the load report."""
from __future__ import annotations

import argparse
import json
import os
import pickle

import pytest
import torch

from thoraxmae.trainers.checkpoint_files import (
    CHEXPERT_REFERENCE_ORDER,
    FORMATS,
    NIH_ORDER,
    check_checkpoint,
    open_checkpoint,
)
from thoraxmae.trainers.checkpoints import load_encoder, save_model
from thoraxmae.trainers.config import FinetuneConfig, ModelConfig
from thoraxmae.trainers.errors import CheckpointError
from thoraxmae.trainers.models import build_classifier, build_mae

TINY = ModelConfig(name="vit_tiny_test", depth=2)
# our CheXpert store
STORE_ORDER = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


class Payload:
    """Unpickling it would create `marker`: a stand-in for a malicious checkpoint."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def mae_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_mae(TINY).state_dict()


def released(state: dict, **args) -> dict:
    """The paper's released dict layout (docs/paper.md)."""
    return {"model": state, "optimizer": {}, "epoch": 74, "scaler": {}, "args": argparse.Namespace(**args)}


def test_the_format_list_is_the_literal_type_and_auto_is_the_default():
    assert FORMATS == ("thoraxmae", "medical_mae", "timm")
    assert FinetuneConfig().init_format == "auto"


def test_all_three_formats_are_recognised_from_the_content(tmp_path, mae_state):
    ours = save_model(tmp_path / "checkpoint.pt", mae_state, epoch=3,
                      model_config=TINY.model_dump(mode="json"))
    paper = tmp_path / "vit-s_CXR_0.3M_mae.pth"
    torch.save(released(mae_state, model="mae_vit_small_patch16_dec512d2b"), paper)
    plain = tmp_path / "timm.pth"
    torch.save(build_classifier(TINY, 14, 0.0).state_dict(), plain)
    legacy = tmp_path / "legacy.pth"  # the pre-zip torch.save format
    torch.save(released(mae_state), legacy, _use_new_zipfile_serialization=False)
    assert [check_checkpoint(p) for p in (ours, paper, plain, legacy)] == ["thoraxmae", "medical_mae", "timm",
                                                                          "medical_mae"]
    ck = open_checkpoint(plain)
    assert ck.format == "timm" and set(ck.state) == set(ck.content["model"]) and ck.label_names(14) is None
    assert open_checkpoint(paper, "medical_mae").args.model == "mae_vit_small_patch16_dec512d2b"
    with pytest.raises(CheckpointError, match=r"timm.pth: is a timm checkpoint \(a state dict of \d+ "
                                              r"tensors\), "
                                              r"not thoraxmae; set the format to 'timm' or 'auto'"):
        open_checkpoint(plain, "thoraxmae")


def assert_clean(message: str) -> None:
    assert "\x1b" not in message and "weights_only" not in message and "False" not in message


def test_random_bytes_are_refused_naming_the_file_and_the_formats_tried(tmp_path):
    path = tmp_path / "random.pth"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError) as err:
        check_checkpoint(path)
    assert str(err.value) == (f"{path}: cannot be read as a checkpoint (tried thoraxmae, medical_mae, timm): "
                              "found neither a torch.save archive nor a pickle of tensors")
    assert_clean(str(err.value))
    assert err.value.__cause__ is None  # torch's own message (advising an unsafe load) is not chained
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pth: .*found an empty or truncated file"):
        check_checkpoint(tmp_path / "empty.pth")
    (tmp_path / "short.pth").write_bytes(b"junk")  # torch's unpickler fails with struct.error on 4 bytes
    with pytest.raises(CheckpointError, match="short.pth: cannot be read as a checkpoint"):
        check_checkpoint(tmp_path / "short.pth")


@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path, mae_state, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if how == "torch.save":
        torch.save({"model": mae_state, "args": Payload(str(marker))}, path)
    else:
        path.write_bytes(pickle.dumps(Payload(str(marker)), protocol=2))
    assert not marker.exists()
    with pytest.raises(CheckpointError) as err:
        load_encoder(build_classifier(TINY, 2, 0.0), path)
    message = str(err.value)
    assert message.startswith(f"{path}: cannot be read as a checkpoint (tried thoraxmae, medical_mae, timm): "
                              "")
    assert "it pickles `posix.system`, which a safe (weights-only) load never runs" in message
    assert_clean(message)
    assert not marker.exists()


def test_a_dict_of_something_else_is_described(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "stats.pth")
    with pytest.raises(CheckpointError, match=r"stats.pth: not a checkpoint of a known format \(tried "
                                              r"thoraxmae, "
                                              r"medical_mae, timm\): found a dict with keys \['epoch', "
                                              r"'lr'\] and no 'model'"):
        check_checkpoint(tmp_path / "stats.pth")
    torch.save({"model": {"w": 1.0}}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match=r"odd.pth: .*'model' entry has non-tensor entries \['w'\]"):
        check_checkpoint(tmp_path / "odd.pth")


def chexpert_head(order: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """A fine-tuned tiny ViT whose head row i is filled with (i + 1) for class order[i]."""
    model = build_classifier(TINY, len(order), 0.0)
    state = model.state_dict()
    state["head.weight"] = torch.arange(1.0, len(order) + 1)[:, None].expand(-1, 64).clone()
    state["head.bias"] = torch.arange(1.0, len(order) + 1)
    return state


def head_rows(model) -> list[float]:
    return model.head.bias.tolist()


def test_a_released_chexpert_head_is_put_into_the_store_order(tmp_path):
    path = tmp_path / "chexpert_finetuned.pth"
    torch.save(released(chexpert_head(CHEXPERT_REFERENCE_ORDER), dataset="chexpert", nb_classes=5), path)
    model = build_classifier(TINY, 5, 0.0)
    report = load_encoder(model, path, label_names=STORE_ORDER, require_head=True)
    assert report.head == "reordered" and report.file_classes == CHEXPERT_REFERENCE_ORDER
    # reference rows: Cardiomegaly 1, Edema 2, Consolidation 3, Atelectasis 4, Pleural Effusion 5
    assert head_rows(model) == [4.0, 1.0, 3.0, 2.0, 5.0]
    assert model.head.weight[:, 0].tolist() == [4.0, 1.0, 3.0, 2.0, 5.0]
    assert report.missing == frozenset() and "head reordered" in " ".join(report.lines())


def test_our_head_keeps_its_stored_order_and_other_classes_are_dropped_or_rejected(tmp_path):
    path = save_model(tmp_path / "best_model.pt", chexpert_head(STORE_ORDER), label_names=list(STORE_ORDER))
    same = build_classifier(TINY, 5, 0.0)
    assert load_encoder(same, path, label_names=STORE_ORDER).head == "loaded"
    assert head_rows(same) == [1.0, 2.0, 3.0, 4.0, 5.0]
    other = ("A", "B", "C", "D", "E")
    model = build_classifier(TINY, 5, 0.0)
    report = load_encoder(model, path, label_names=other)  # fine-tuning on other classes: a fresh head
    assert report.head == "dropped" and report.missing == {"head.weight", "head.bias"}
    with pytest.raises(CheckpointError, match=r"best_model.pt: has no trained head for the classes \['A', "
                                              r"'B', 'C', "
                                              r"'D', 'E'\] \(head dropped; file classes \['Atelectasis'"):
        load_encoder(model, path, label_names=other, require_head=True)


def test_a_head_without_a_stated_order_is_loaded_unchecked_with_a_warning(tmp_path, caplog):
    path = tmp_path / "timm.pth"
    torch.save(chexpert_head(STORE_ORDER), path)
    model = build_classifier(TINY, 5, 0.0)
    assert load_encoder(model, path, label_names=STORE_ORDER).head == "unchecked"
    assert "does not say its head's class order" in caplog.text


def test_the_load_report_says_what_was_loaded_missing_dropped_and_resized(tmp_path, mae_state):
    path = tmp_path / "vit-s_CXR_0.3M_mae.pth"
    torch.save(released(mae_state), path)
    model = build_classifier(ModelConfig(name="vit_tiny_test", depth=2, img_size=96), 14, 0.0)
    report = load_encoder(model, path, label_names=NIH_ORDER)
    d = json.loads(json.dumps(report.as_dict()))
    decoder = sorted(k for k in mae_state if k.startswith(("decoder_", "mask_token", "norm.")))
    assert d == {"path": str(path), "format": "medical_mae", "loaded": sorted(set(mae_state) - set(decoder)),
                 "missing": ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"],
                 "dropped": decoder,
                 "pos_embed_resized": {"from": [8, 8], "to": [12, 12]}, "head": "absent",
                 "file_classes": None}
    assert report.lines() == [
        f"loaded {path} (medical_mae): {len(d['loaded'])} tensors",
        "missing (trained from scratch): ['fc_norm.bias', 'fc_norm.weight', 'head.bias', 'head.weight']",
        ("dropped: decoder_blocks (12), decoder_embed (2), decoder_norm (2), decoder_pos_embed (1), "
         "decoder_pred (2), mask_token (1), norm (2)"),
        "pos_embed resized from a 8x8 to a 12x12 patch grid",
    ]


def test_the_reference_class_orders_match_the_sources():
    from thoraxmae.datasets.sources import CHEXPERT_TASKS, NIH_LABELS

    assert NIH_ORDER == NIH_LABELS
    assert sorted(CHEXPERT_REFERENCE_ORDER) == sorted(CHEXPERT_TASKS)


def test_a_released_covidx_head_gives_the_rows_of_the_stores_three_classes(tmp_path):
    from thoraxmae.trainers.checkpoint_files import COVIDX_REFERENCE_ORDER

    path = tmp_path / "covidx_finetuned.pth"
    torch.save(released(chexpert_head(COVIDX_REFERENCE_ORDER), dataset="covidx", nb_classes=4), path)
    model = build_classifier(TINY, 3, 0.0)
    report = load_encoder(model, path, label_names=("normal", "pneumonia", "COVID-19"), require_head=True)
    assert report.head == "reordered" and head_rows(model) == [1.0, 3.0, 4.0]  # 'positive' (row 2) left out

"""Evaluation numbers, the masked losses, and the metric names the loops report (== the run schema)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from thoraxmae.trainers import metrics, reporting
from thoraxmae.trainers.finetune import multiclass_loss, multilabel_loss


def test_per_class_auc_is_undefined_for_a_one_valued_class_and_the_mean_skips_it():
    y = np.array([[1, 0], [0, 0], [1, 0], [0, 0]], float)
    s = np.array([[0.9, 0.1], [0.2, 0.5], [0.8, 0.3], [0.4, 0.2]])
    aucs = metrics.per_class_auc(y, s)
    assert aucs[0] == 1.0 and math.isnan(aucs[1])
    assert metrics.mean_auc(aucs) == 1.0


def test_masked_rows_do_not_count_toward_a_class_auc():
    y = np.array([[1], [0], [1], [0]], float)
    s = np.array([[0.9], [0.2], [0.1], [0.4]])  # row 2 is ranked wrongly...
    mask = np.array([[1], [1], [0], [1]])  # ...but masked (U-Ignore)
    assert metrics.per_class_auc(y, s)[0] == 0.5
    assert metrics.per_class_auc(y, s, mask)[0] == 1.0


def test_bootstrap_ci_brackets_the_point_estimate_and_narrows_with_more_rows():
    rng = np.random.default_rng(0)

    def width(n):
        y = rng.integers(0, 2, (n, 3)).astype(float)
        s = y * 0.6 + rng.random((n, 3))
        point = metrics.mean_auc(metrics.per_class_auc(y, s))
        ci = metrics.bootstrap_ci(y, s, None, 200, seed=1)
        assert ci.mauc[0] < point < ci.mauc[1] and ci.unit == "image" and ci.n_units == n
        return ci.mauc[1] - ci.mauc[0]

    assert width(2000) < width(100) / 2
    empty = metrics.bootstrap_ci(np.ones((3, 1)), np.ones((3, 1)), None, 0)
    assert all(math.isnan(v) for v in empty.mauc) and empty.n_boot == 0


def test_the_resampled_auc_equals_sklearn_on_the_resampled_rows():
    rng = np.random.default_rng(3)
    y = (rng.random((300, 4)) < 0.3).astype(float)
    s = np.round(y * 0.4 + rng.random((300, 4)), 1)  # many ties
    mask = rng.random((300, 4)) < 0.8
    ranked = metrics.RankedScores(y, s, mask)
    for _ in range(5):
        rows = rng.integers(0, 300, 300)
        weights = np.bincount(rows, minlength=300).astype(float)
        np.testing.assert_allclose(ranked.aucs(weights), metrics.per_class_auc(y[rows], s[rows], mask[rows]),
                                   rtol=0, atol=1e-12)


def repeated_patients(n_patients: int, images_each: int, seed: int = 0):
    """Each patient's images share its label and (nearly) its score: a strong patient effect."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, (n_patients, 2)).astype(float)
    score = label * 0.3 + rng.random((n_patients, 2))
    y = np.repeat(label, images_each, axis=0)
    s = np.repeat(score, images_each, axis=0) + rng.random(y.shape) * 1e-3
    ids = np.repeat([f"p{i:03d}" for i in range(n_patients)], images_each)
    return y, s, ids


def test_patient_intervals_are_wider_than_image_intervals_when_patients_repeat():
    y, s, ids = repeated_patients(40, 10)
    by_patient = metrics.bootstrap_ci(y, s, None, 300, seed=0, patient_ids=ids)
    by_image = metrics.bootstrap_ci(y, s, None, 300, seed=0)
    assert ((by_patient.unit, by_patient.n_units, by_image.unit, by_image.n_units)
            == ("patient", 40, "image", 400))
    assert by_patient.mauc[1] - by_patient.mauc[0] > 2 * (by_image.mauc[1] - by_image.mauc[0])
    assert all(p[1] - p[0] > i[1] - i[0] for p,
               i in zip(by_patient.per_class, by_image.per_class, strict=True))


def test_one_image_per_patient_gives_the_image_level_intervals_exactly():
    rng = np.random.default_rng(1)
    y = (rng.random((200, 3)) < 0.4).astype(float)
    s = y * 0.5 + rng.random((200, 3))
    ids = [f"patient{i}" for i in rng.permutation(200)]
    by_patient = metrics.bootstrap_ci(y, s, None, 100, seed=7, patient_ids=ids)
    by_image = metrics.bootstrap_ci(y, s, None, 100, seed=7)
    assert by_patient.unit == "patient" and by_image.unit == "image"
    assert by_patient.mauc == by_image.mauc
    np.testing.assert_array_equal(by_patient.per_class, by_image.per_class)


def test_missing_patient_ids_fall_back_to_images():
    y, s, ids = repeated_patients(10, 3)
    ids = ids.astype(object)
    ids[4] = ""
    assert metrics.bootstrap_ci(y, s, None, 5, patient_ids=ids).unit == "image"
    assert metrics.resampling_units(4, ["b", "a", "b", "c"])[2] == "patient"
    order, starts, _ = metrics.resampling_units(4, ["b", "a", "b", "c"])  # units by first appearance: b, a, c
    assert order.tolist() == [0, 2, 1, 3] and starts.tolist() == [0, 2, 3, 4]


def test_multiclass_accuracy_has_an_interval_and_the_metrics_are_named():
    rng = np.random.default_rng(2)
    y = np.eye(3)[rng.integers(0, 3, 300)]
    s = y * 0.5 + rng.random((300, 3))
    ci = metrics.bootstrap_ci(y, s, None, 200, seed=0, patient_ids=np.arange(300) // 3, multiclass=True)
    acc = metrics.accuracy(y, s)
    assert ci.acc[0] < acc < ci.acc[1]
    out = ci.metrics("test/", ["normal", "pneumonia", "COVID-19"])
    assert out["test/ci_unit"] == "patient" and out["test/acc_ci_low"] == ci.acc[0]
    assert sorted(out) == sorted(["test/mauc_ci_low", "test/mauc_ci_high", "test/ci_unit", "test/acc_ci_low",
                                  "test/acc_ci_high"]
                                 + [f"test/auc_ci_{e}/{n}" for n in ["normal", "pneumonia", "COVID-19"]
                                    for e in ("low", "high")])


def test_accuracy_is_top1():
    y = np.eye(3)[[0, 1, 2, 2]]
    s = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    assert metrics.accuracy(y, s) == 0.75


class _Fixed(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits


def test_multilabel_loss_ignores_masked_labels():
    logits = torch.tensor([[5.0, -5.0], [5.0, 5.0]])
    labels = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # entry [1, 1] is badly wrong
    images = torch.zeros(2, 1)
    full = multilabel_loss(_Fixed(logits), (images, labels, torch.ones(2, 2)))
    masked = multilabel_loss(_Fixed(logits), (images, labels, torch.tensor([[1.0, 1.0], [1.0, 0.0]])))
    assert masked < 0.01 < full


def test_multiclass_loss_is_cross_entropy_on_the_one_hot_label():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    loss = multiclass_loss(_Fixed(logits),
                           (torch.zeros(1, 1), torch.tensor([[1.0, 0.0, 0.0]]), torch.ones(1, 3)))
    assert loss.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 2)))


def test_the_run_schema_uses_the_reported_names():
    from thoraxmae.study import schema

    names = {k: v for k, v in vars(reporting).items() if k.startswith("M_")}
    for key, value in names.items():
        assert getattr(schema, key, value) == value, key
    # the per-class and accuracy intervals are logged by prefix ("test/"); the schema may not name them yet
    assert {k for k in names if not hasattr(schema, k)} <= {
        "M_TEST_AUC_CI_LOW_PREFIX", "M_TEST_AUC_CI_HIGH_PREFIX", "M_TEST_ACC_CI_LOW", "M_TEST_ACC_CI_HIGH"}


def test_patient_ids_follow_the_order_ranks_gather_the_test_split():
    from types import SimpleNamespace

    from thoraxmae.trainers.finetune import gathered_patient_ids

    class Split(SimpleNamespace):
        def __len__(self):
            return len(self.indices)

    store = SimpleNamespace(patient_ids=np.array([f"p{i}" for i in range(10)], dtype=object))
    ds = Split(store=store, indices=np.array([1, 3, 4, 6, 9]))
    assert gathered_patient_ids(ds, 1).tolist() == ["p1", "p3", "p4", "p6", "p9"]
    # rank 0: 0, 2, 4; rank 1: 1, 3
    assert gathered_patient_ids(ds, 2).tolist() == ["p1", "p4", "p9", "p3", "p6"]

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
        lo, hi = metrics.bootstrap_mauc_ci(y, s, None, 200, seed=1)
        assert lo < point < hi
        return hi - lo

    assert width(2000) < width(100) / 2
    assert all(math.isnan(v) for v in metrics.bootstrap_mauc_ci(np.ones((3, 1)), np.ones((3, 1)), None, 0))


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
    loss = multiclass_loss(_Fixed(logits), (torch.zeros(1, 1), torch.tensor([[1.0, 0.0, 0.0]]), torch.ones(1, 3)))
    assert loss.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 2)))


def test_the_run_schema_uses_the_reported_names():
    from thoraxmae.study import schema

    names = {k: v for k, v in vars(reporting).items() if k.startswith("M_")}
    for key, value in names.items():
        assert getattr(schema, key) == value, key

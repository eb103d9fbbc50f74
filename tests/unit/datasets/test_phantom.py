"""The phantom: real NIH layout, read back by the real NIH source, realistic labels, learnable signal."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict

from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.phantom import (
    CSV_HEADER,
    CSV_NAME,
    NIH_COUNTS,
    draw_labels,
    draw_patients,
    generate_phantom,
    split_patients,
)
from thoraxmae.datasets.phantom_anatomy import sample_anatomy
from thoraxmae.datasets.phantom_findings import render
from thoraxmae.datasets.sources import load_source
from thoraxmae.datasets.sources.nih import NIH_LABELS

NAME = re.compile(r"^(\d{8})_(\d{3})\.png$")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom_small")
    generate_phantom(root, n=60, size=32, seed=3)
    return root


def test_writes_the_nih_layout(small):
    lines = (small / CSV_NAME).read_text().splitlines()
    assert lines[0] == ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
                        "View "
                        "Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]") == CSV_HEADER
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == 60 and all(len(r) == 11 for r in rows)
    files = sorted(p.name for p in (small / "images").iterdir())
    assert files == sorted(r[0] for r in rows) and all(NAME.match(f) for f in files)
    for name, _, follow_up, patient, *_ in rows:  # the name is patient id + follow-up number
        m = NAME.match(name)
        assert int(m.group(1)) == int(patient) and int(m.group(2)) == int(follow_up)
    with Image.open(small / "images" / files[0]) as img:
        assert img.mode == "L" and img.size == (32, 32)


def test_split_lists_are_patient_disjoint_and_cover_everything(small):
    train_val = (small / "train_val_list.txt").read_text().split()
    test = (small / "test_list.txt").read_text().split()
    assert sorted(train_val + test) == sorted(p.name for p in (small / "images").iterdir())
    patients = {name: NAME.match(name).group(1) for name in train_val + test}
    assert not {patients[n] for n in train_val} & {patients[n] for n in test}
    assert 0.1 < len(test) / 60 < 0.4


def test_the_real_nih_source_reads_it(small):
    table = load_source("nih", small, split_seed=0)
    assert table.label_names == NIH_LABELS and len(table) == 60
    assert all(table.split_counts()[s] > 0 for s in ("train", "val", "test"))
    csv = {r.split(",")[0]: r.split(",")[1] for r in (small / CSV_NAME).read_text().splitlines()[1:]}
    for name, row in zip(table.frame["image_id"], table.labels, strict=True):
        assert ({k for k, v in zip(NIH_LABELS, row, strict=True) if v}
                == {*csv[name].split("|")} - {"No Finding"})


def test_same_seed_same_bytes_other_seed_other_images(small, tmp_path):
    generate_phantom(tmp_path / "again", n=60, size=32, seed=3)
    generate_phantom(tmp_path / "other", n=60, size=32, seed=4)
    assert (tmp_path / "again" / CSV_NAME).read_bytes() == (small / CSV_NAME).read_bytes()
    name = "00000001_000.png"
    same = np.asarray(Image.open(tmp_path / "again" / "images" / name))
    assert np.array_equal(same, np.asarray(Image.open(small / "images" / name)))
    assert not np.array_equal(same, np.asarray(Image.open(tmp_path / "other" / "images" / name)))


def test_label_frequencies_follow_nih():
    labels = draw_labels(40_000, np.random.default_rng(0))
    prevalence = dict(zip(NIH_LABELS, labels.mean(0), strict=True))
    assert 0.50 < (labels.sum(1) == 0).mean() < 0.58  # NIH: 53.8% No Finding
    assert max(prevalence, key=prevalence.get) == "Infiltration" and 0.15 < prevalence["Infiltration"] < 0.24
    assert min(prevalence, key=prevalence.get) == "Hernia" and prevalence["Hernia"] < 0.006
    for k in NIH_LABELS:  # co-occurrence and "at least one finding" keep NIH's prevalences
        assert 1 / 1.25 < prevalence[k] / (NIH_COUNTS[k] / 112_120) < 1.25, k


def test_findings_co_occur():
    labels = draw_labels(40_000, np.random.default_rng(1))
    col = {k: j for j, k in enumerate(NIH_LABELS)}

    def conditional(label, given):
        has = labels[:, col[given]] > 0
        return labels[has, col[label]].mean(), labels[~has, col[label]].mean()

    for label, given in (("Effusion", "Cardiomegaly"), ("Atelectasis", "Effusion"),
                         ("Edema", "Cardiomegaly")):
        with_given, without = conditional(label, given)
        assert with_given > 2 * without, (label, given)


def test_patients_have_follow_ups_and_test_is_about_23_percent():
    rng = np.random.default_rng(0)
    patient, follow_up = draw_patients(5000, rng)
    assert len(patient) == 5000 and follow_up.max() >= 3
    assert 1.8 < 5000 / len(np.unique(patient)) < 4.0  # NIH: 3.6 images per patient
    test = split_patients(patient, rng)
    assert 0.21 < test.mean() < 0.25
    assert not set(patient[test]) & set(patient[~test])


def test_small_sets_have_positives_of_every_label_in_both_parts(phantom_nih):
    table = load_source("nih", phantom_nih)
    test = table.positives("test")
    train_val = {k: table.positives("train")[k] + table.positives("val")[k] for k in NIH_LABELS}
    assert min(test.values()) >= 2 and min(train_val.values()) >= 5
    assert (table.labels.sum(1) == 0).mean() > 0.3  # healthy images stay the largest group


def _pixels16(images: list[np.ndarray]) -> np.ndarray:
    a = np.stack(images).astype(np.float32) / 255  # [N, 64, 64]
    return a.reshape(len(a), 16, 4, 16, 4).mean((2, 4)).reshape(len(a), -1)  # [N, 256]


@pytest.mark.parametrize("finding, min_auc", [("Cardiomegaly", 0.9), ("Effusion", 0.75), ("Emphysema", 0.8)])
def test_findings_are_learnable_by_a_linear_model(finding, min_auc):
    rng = np.random.default_rng(0)
    images = [render(sample_anatomy(rng), [finding] if i % 2 else [], 64, rng) for i in range(120)]
    y = np.arange(120) % 2
    scores = cross_val_predict(LogisticRegression(C=0.1, max_iter=2000), _pixels16(images), y, cv=4,
                               method="decision_function")
    assert roc_auc_score(y, scores) > min_auc


def test_generated_labels_carry_signal(tmp_path):
    table = load_source("nih", generate_phantom(tmp_path, n=200, size=64, seed=0))
    x = _pixels16([np.asarray(Image.open(p)) for p in table.frame["path"]])
    aucs = []
    for j in range(len(NIH_LABELS)):
        y = table.labels[:, j]
        if y.sum() >= 8:
            s = cross_val_predict(LogisticRegression(C=0.1, max_iter=2000), x, y, cv=4,
                                  method="decision_function")
            aucs.append(roc_auc_score(y, s))
    assert len(aucs) >= 10 and np.mean(aucs) > 0.65


def test_cardiomegaly_widens_the_heart():
    rng = np.random.default_rng(5)
    anat = sample_anatomy(rng)
    normal = render(anat, [], 64, np.random.default_rng(1)).astype(float)
    big = render(anat, ["Cardiomegaly"], 64, np.random.default_rng(1)).astype(float)
    rows = slice(int(0.52 * 64), int(0.6 * 64))  # heart level: more bright (non-lung) pixels
    assert (big[rows] > 90).sum() > (normal[rows] > 90).sum() + 20


@pytest.mark.parametrize("n, size, match", [(5, 32, "n=5"), (20, 8, "size=8")])
def test_too_small_is_an_error(tmp_path, n, size, match):
    with pytest.raises(DataError, match=match):
        generate_phantom(tmp_path, n=n, size=size)

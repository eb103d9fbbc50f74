"""The contract every source honours (like optuna's shared sampler tests), the registry, and mixtures."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.unit.datasets.fixtures_sources import (
    write_chexpert,
    write_covidx,
    write_dicom_folder,
    write_mimic,
    write_nih,
)
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.sources import LABEL_ALIASES, SOURCES, harmonise_labels, load_source, source_options
from thoraxmae.datasets.table import FRAME_COLUMNS, SPLITS, concat_tables

WRITERS = {"nih": write_nih, "chexpert": write_chexpert, "mimic": write_mimic, "covidx": write_covidx,
           "dicom": lambda root: write_dicom_folder(root, with_split=False)}
SEEDED = ("nih", "chexpert", "covidx", "dicom")  # sources that draw (part of) their split from split_seed


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("sources")
    return {fmt: write(base / fmt) for fmt, write in WRITERS.items()}


def test_every_format_has_a_writer():
    assert set(WRITERS) == set(SOURCES)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_source_contract(fmt, roots):
    table = load_source(fmt, roots[fmt])
    n, k = len(table), len(table.label_names)
    assert table.name == fmt and n > 0 and k > 0
    assert tuple(table.frame.columns) == FRAME_COLUMNS
    assert table.labels.shape == (n, k) and table.labels.dtype == np.float32
    assert table.mask.shape == (n, k) and table.mask.dtype == np.uint8
    assert set(np.unique(table.mask)) <= {0, 1}
    assert set(np.unique(table.labels)) <= {0.0, 1.0}
    assert set(table.frame["split"]) == set(SPLITS)
    assert table.frame["image_id"].is_unique
    patients = {s: set(table.frame.loc[table.frame["split"] == s, "patient_id"]) for s in SPLITS}
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"])
    assert not (patients["val"] & patients["test"])
    paths = [Path(p) for p in table.frame["path"]]
    assert all(p.is_absolute() and p.is_file() for p in paths)
    assert set(table.frame["reader"]) == {"dicom" if fmt == "dicom" else "image"}
    if table.task == "multiclass":
        np.testing.assert_array_equal(table.labels.sum(axis=1), np.ones(n, np.float32))


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_source_is_deterministic(fmt, roots):
    a, b = load_source(fmt, roots[fmt]), load_source(fmt, roots[fmt])
    pd.testing.assert_frame_equal(a.frame, b.frame)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.mask, b.mask)


@pytest.mark.parametrize("fmt", SEEDED)
def test_split_seed_moves_patients_between_train_and_val(fmt, roots):
    val_sets = {frozenset(load_source(fmt, roots[fmt], split_seed=s)
                          .frame.query("split == 'val'")["patient_id"])
                for s in range(6)}
    assert len(val_sets) > 1


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_unknown_option_names_it_and_lists_valid_ones(fmt, roots):
    with pytest.raises(DataError, match=r"unknown option\(s\) \['split_sed'\].*missing"):
        load_source(fmt, roots[fmt], split_sed=1)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_missing_option_is_checked(fmt, roots):
    with pytest.raises(DataError, match="missing='ignore'"):
        load_source(fmt, roots[fmt], missing="ignore")


def test_unknown_format_and_missing_root(tmp_path):
    with pytest.raises(DataError, match="'nihh'.*nih"):
        load_source("nihh", tmp_path)
    with pytest.raises(DataError, match="nowhere"):
        load_source("nih", tmp_path / "nowhere")


def test_source_options_are_the_documented_ones():
    assert source_options("nih") == ("split_seed", "val_fraction", "split_files", "missing", "csv")
    assert "uncertainty" in source_options("mimic") and "labels_csv" in source_options("dicom")


def test_mixture_of_chexpert_and_nih_matches_labels_by_name(roots):
    chex, nih = load_source("chexpert", roots["chexpert"]), load_source("nih", roots["nih"])
    mix = concat_tables([chex, nih])
    assert len(mix) == len(chex) + len(nih)
    # CheXpert's 5 tasks come first, then the NIH labels they lack; "Pleural Effusion" stays apart from
    # "Effusion".
    assert mix.label_names[:5] == chex.label_names and len(mix.label_names) == 5 + 14 - 4
    from_chex = mix.frame["image_id"].str.startswith("chexpert/").to_numpy()
    j_pe, j_eff = mix.label_names.index("Pleural Effusion"), mix.label_names.index("Effusion")
    assert mix.mask[from_chex, j_eff].sum() == 0 and mix.mask[~from_chex, j_pe].sum() == 0
    j_card = mix.label_names.index("Cardiomegaly")
    assert mix.mask[:, j_card].all()
    np.testing.assert_array_equal(mix.labels[~from_chex, j_card],
                                  nih.labels[:, nih.label_names.index("Cardiomegaly")])


def test_harmonised_mixture_shares_the_effusion_column(roots):
    chex = load_source("chexpert", roots["chexpert"], harmonise=True)
    assert LABEL_ALIASES["Pleural Effusion"] == "Effusion"
    assert "Effusion" in chex.label_names and "Pleural Effusion" not in chex.label_names
    assert chex.notes["renamed_labels"] == {"Pleural Effusion": "Effusion"}
    nih = load_source("nih", roots["nih"])
    mix = concat_tables([chex, nih])
    assert len(mix.label_names) == 5 + 14 - 5
    j = mix.label_names.index("Effusion")
    assert mix.mask[:, j].all()
    assert mix.labels[:len(chex), j].sum() == chex.positives()["Effusion"]


def test_harmonise_refuses_to_merge_two_labels_into_one(roots):
    chex = load_source("chexpert", roots["chexpert"])
    with pytest.raises(DataError, match="duplicate names"):
        harmonise_labels(chex, {"Pleural Effusion": "Edema"})

"""Mixtures of sources: `concat_tables` / `keep_splits`, and `thoraxmae data prepare --also ...
--keep-splits ...`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.unit.datasets.fixtures_sources import write_chexpert, write_nih, write_nih_paper_splits
from thoraxmae.cli import main
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.sources import load_source
from thoraxmae.datasets.store import open_store
from thoraxmae.datasets.table import concat_tables, keep_splits

PREPARE = ["data", "prepare", "--size", "16", "--workers", "1", "--quiet"]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    base = tmp_path_factory.mktemp("mixture")
    for name, seed in (("a", 1), ("b", 2)):
        assert main(["data", "phantom", str(base / name), "--n", "40", "--size", "32",
                     "--seed", str(seed)]) == 0
    return base / "a", base / "b"


def _manifest(store) -> dict:
    return json.loads((store / "manifest.json").read_text())


# ---------------------------------------------------------------- library

def test_parts_of_one_format_get_unique_prefixes(phantoms):
    a, b = (load_source("nih", p) for p in phantoms)
    mix = concat_tables([a, b, a])
    assert (mix.notes["parts"] == ["nih", "nih-2", "nih-3"]
            and set(mix.notes["part_notes"]) == {"nih", "nih-2", "nih-3"})
    assert len(mix) == 2 * len(a) + len(b) and not mix.frame["image_id"].duplicated().any()
    assert mix.frame["image_id"].iloc[len(a)].startswith("nih-2/")
    mix.validate()  # patient ids are prefixed too: no leakage across parts


def test_keep_splits_keeps_only_the_listed_splits(phantoms):
    table = load_source("nih", phantoms[0])
    kept = keep_splits(table, ["val", "test"])
    assert kept.split_counts() == {**table.split_counts(), "train": 0}
    assert kept.notes["kept_splits"] == ["val", "test"]
    np.testing.assert_array_equal(kept.labels,
                                  table.labels[table.frame["split"].isin(["val", "test"]).to_numpy()])
    with pytest.raises(DataError, match="trian"):
        keep_splits(table, ["trian"])


# ---------------------------------------------------------------- CLI

def test_mixture_store_holds_the_train_rows_of_both_parts(phantoms, tmp_path, capsys):
    a, b = phantoms
    store = tmp_path / "store"
    rc = main(PREPARE + [str(a), "--format", "nih", "--also", f"nih={b}", "--keep-splits", "train",
                         "--out", str(store)])
    assert rc == 0
    ta, tb = load_source("nih", a), load_source("nih", b)
    m = _manifest(store)
    n_train = ta.split_counts()["train"] + tb.split_counts()["train"]
    assert m["source"] == "mixture" and m["counts"] == {"train": n_train, "val": 0, "test": 0}
    assert m["notes"]["parts"] == ["nih", "nih-2"] and m["notes"]["kept_splits"] == ["train"]
    assert [(p["name"], p["format"], p["dir"], p["counts"]["train"]) for p in m["notes"]["sources"]] == [
        ("nih", "nih", str(a.resolve()), ta.split_counts()["train"]),
        ("nih-2", "nih", str(b.resolve()), tb.split_counts()["train"])]
    ids = open_store(store).image_ids
    assert len(set(ids)) == len(ids) == n_train
    train_a = set(ta.frame.loc[ta.frame["split"] == "train", "image_id"])
    assert {i.split("/", 1)[1] for i in ids if i.startswith("nih/")} == train_a
    assert "mixture of nih" in capsys.readouterr().out


def test_shared_source_options_reach_every_part(phantoms, tmp_path):
    a, b = phantoms
    store = tmp_path / "store"
    rc = main(PREPARE + [str(a), "--format", "nih", "--also", f"nih={b}", "--split-seed", "3",
                         "--val-fraction", "0.3",
                         "--out", str(store)])
    assert rc == 0
    parts = [load_source("nih", p, split_seed=3, val_fraction=0.3).split_counts() for p in (a, b)]
    assert [p["counts"] for p in _manifest(store)["notes"]["sources"]] == parts
    assert _manifest(store)["counts"] == {s: parts[0][s] + parts[1][s] for s in parts[0]}


def _chexpert_train_frontal(root) -> set[str]:
    """Every frontal row of train.csv, read straight from the file (prefix stripped)."""
    lines = (root / "train.csv").read_text().splitlines()[1:]
    return {line.split(",")[0].split("/", 1)[1] for line in lines if line.split(",")[3] == "Frontal"}


def _official(folder, split) -> set[str]:
    return {line.split()[0] for line in (folder / f"{split}_official.txt").read_text().splitlines() if line}


def test_xrays_0_3m_keeps_all_chexpert_train_frontal_and_only_nih_train_official(tmp_path):
    """X-rays 0.3M in miniature, by the documented command: NIH train_official (split files) + every
    CheXpert train frontal image (191,027 + 75,312 at full size), no NIH val/test and no CheXpert valid
    image."""
    nih, chex = write_nih(tmp_path / "nih"), write_chexpert(tmp_path / "chexpert")
    splits = write_nih_paper_splits(tmp_path / "splits")
    store = tmp_path / "store"
    rc = main(PREPARE + [str(nih), "--format", "nih", "--split-files", str(splits), "--also",
                         f"chexpert={chex}",
                         "--keep-splits", "train", "--out", str(store)])
    assert rc == 0
    ids = set(open_store(store).image_ids)
    chex_ids = {i.split("/", 1)[1] for i in ids if i.startswith("chexpert/")}
    nih_ids = {i.split("/", 1)[1] for i in ids if i.startswith("nih/")}
    # 10 patients x 2 frontal studies
    assert chex_ids == _chexpert_train_frontal(chex) and len(chex_ids) == 20
    assert nih_ids == _official(splits, "train") and len(nih_ids) == 13
    assert not nih_ids & (_official(splits, "val") | _official(splits, "test"))
    m = _manifest(store)
    assert m["counts"] == {"train": 33, "val": 0, "test": 0} and len(ids) == 33
    assert m["notes"]["part_notes"]["chexpert"]["val_fraction"] == 0.0
    assert [(p["name"], p["images"]) for p in m["notes"]["sources"]] == [("nih", 13), ("chexpert", 20)]


def test_without_split_files_nih_still_keeps_its_val_out_of_pre_training(tmp_path):
    nih, chex = write_nih(tmp_path / "nih"), write_chexpert(tmp_path / "chexpert")
    rc = main(PREPARE + [str(nih), "--format", "nih", "--also", f"chexpert={chex}", "--keep-splits", "train",
                         "--out", str(tmp_path / "store")])
    assert rc == 0
    ids = set(open_store(tmp_path / "store").image_ids)
    t_nih = load_source("nih", nih)  # the fine-tuning store's split (same default seed and fraction)
    held_out = set(t_nih.frame.loc[t_nih.frame["split"] != "train", "image_id"])
    assert {i.split("/", 1)[1] for i in ids if i.startswith("nih/")} == \
        set(t_nih.frame.loc[t_nih.frame["split"] == "train", "image_id"])
    assert held_out and not {i.split("/", 1)[1] for i in ids} & held_out
    assert len([i for i in ids if i.startswith("chexpert/")]) == 20


def test_an_explicit_val_fraction_is_honoured_for_chexpert(tmp_path):
    nih, chex = write_nih(tmp_path / "nih"), write_chexpert(tmp_path / "chexpert")
    splits = write_nih_paper_splits(tmp_path / "splits")
    rc = main(PREPARE + [str(nih), "--format", "nih", "--split-files", str(splits), "--also",
                         f"chexpert={chex}",
                         "--val-fraction", "0.2", "--keep-splits", "train", "--out", str(tmp_path / "store")])
    assert rc == 0
    kept = load_source("chexpert", chex, val_fraction=0.2).split_counts()["train"]
    assert kept == 16 and len([i for i in open_store(tmp_path / "store").image_ids
                               if i.startswith("chexpert/")]) == kept


def test_harmonised_recipe_with_u_zeros(tmp_path):
    nih, chex = write_nih(tmp_path / "nih"), write_chexpert(tmp_path / "chexpert")
    splits = write_nih_paper_splits(tmp_path / "splits")
    store = tmp_path / "store"
    rc = main(PREPARE + [str(nih), "--format", "nih", "--split-files", str(splits), "--also",
                         f"chexpert={chex}",
                         "--uncertainty", "zeros", "--harmonise", "--keep-splits", "train",
                         "--out", str(store)])
    assert rc == 0  # --uncertainty goes to chexpert (nih lacks it), --split-files to nih only
    m = _manifest(store)
    assert m["notes"]["part_notes"]["chexpert"]["uncertainty"]["Edema"] == "zeros"
    assert "Effusion" in m["label_names"] and "Pleural Effusion" not in m["label_names"]


def test_main_only_options_do_not_reach_the_extra_parts(tmp_path):
    # b lacks images the split files list
    a, b = write_nih(tmp_path / "a"), write_nih(tmp_path / "b", n_patients=8)
    splits = write_nih_paper_splits(tmp_path / "splits")
    rc = main(PREPARE + [str(a), "--format", "nih", "--split-files", str(splits), "--also", f"nih={b}",
                         "--out", str(tmp_path / "store")])
    assert rc == 0
    assert _manifest(tmp_path / "store")["notes"]["part_notes"]["nih-2"]["split_files"] is None


def test_keep_splits_on_one_source(phantoms, tmp_path):
    rc = main(PREPARE + [str(phantoms[0]), "--format", "nih", "--keep-splits", "val, test",
                         "--out", str(tmp_path / "s")])
    assert rc == 0
    m, t = _manifest(tmp_path / "s"), load_source("nih", phantoms[0])
    assert m["source"] == "nih" and m["counts"] == {**t.split_counts(), "train": 0}
    assert m["notes"]["kept_splits"] == ["val", "test"]


def test_keep_splits_that_empties_the_table_is_an_error(phantoms, tmp_path, capsys, monkeypatch):
    import thoraxmae.datasets.sources

    # Every source insists on three non-empty splits, so stand in one whose val split is empty.
    real = thoraxmae.datasets.sources.load_source

    def no_val(*args, **kwargs):
        t = real(*args, **kwargs)
        return t.select((t.frame["split"] != "val").to_numpy())

    monkeypatch.setattr(thoraxmae.datasets.sources, "load_source", no_val)
    rc = main(PREPARE + [str(phantoms[0]), "--format", "nih", "--also", f"nih={phantoms[1]}", "--keep-splits",
                         "val",
                         "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2 and "--keep-splits val" in err and "val 0" in err and err.count("\n") == 1
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("value", ["trian", ",", "train;val"])
def test_unknown_keep_splits_names_the_value(phantoms, tmp_path, capsys, value):
    rc = main(PREPARE + [str(phantoms[0]), "--format", "nih", "--keep-splits", value,
                         "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2 and f"--keep-splits {value!r}" in err and "train,val,test" in err


@pytest.mark.parametrize("value", ["nih", "=/data/b", "nih=", "nih /data/b"])
def test_malformed_also_names_the_value_and_the_form(phantoms, tmp_path, capsys, value):
    rc = main(PREPARE + [str(phantoms[0]), "--format", "nih", "--also", value, "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert f"--also {value!r}" in err and "FORMAT=DIR" in err


def test_also_with_an_unknown_format_lists_the_known_ones(phantoms, tmp_path, capsys):
    rc = main(PREPARE + [str(phantoms[0]), "--format", "nih", "--also", f"tiff={phantoms[1]}",
                         "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert (rc == 2 and "'tiff'" in err
            and all(f in err for f in ("nih", "chexpert", "mimic", "covidx", "dicom")))


def test_also_with_a_missing_folder_names_it(phantoms, tmp_path, capsys):
    rc = main(PREPARE + [str(phantoms[0]), "--format", "nih", "--also", f"nih={tmp_path / 'nope'}",
                         "--out", str(tmp_path / "s")])
    assert rc == 2 and "nope" in capsys.readouterr().err


def test_an_option_no_part_accepts_is_an_error(phantoms, tmp_path, capsys):
    a, b = phantoms
    rc = main(PREPARE + [str(a), "--format", "nih", "--also", f"nih={b}", "--uncertainty", "ones",
                         "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2 and "'uncertainty'" in err and "split_seed" in err
    rc = main(PREPARE + [str(a), "--format", "nih", "--also", f"dicom={b}", "--labels-csv", "x.csv",
                         "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2 and "'labels_csv'" in err and "main source" in err

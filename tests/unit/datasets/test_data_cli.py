"""`thoraxmae data phantom|prepare`, run in-process through thoraxmae.cli.main."""
from __future__ import annotations

import json

import pytest

from thoraxmae.cli import main
from thoraxmae.datasets.cli import FORMATS


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "phantom"
    assert main(["data", "phantom", str(out), "--n", "40", "--size", "32", "--seed", "1"]) == 0
    return out


def test_phantom_writes_the_set_and_summarises_it(phantom_dir, capsys, tmp_path):
    assert len(list((phantom_dir / "images").glob("*.png"))) == 40
    assert (phantom_dir / "Data_Entry_2017_v2020.csv").is_file()
    assert main(["data", "phantom", str(tmp_path / "p"), "--n", "20", "--size", "16"]) == 0
    out = capsys.readouterr().out
    assert "images" in out and "train" in out and "test" in out and "Hernia" in out


def test_prepare_builds_a_store_and_prints_counts(phantom_dir, tmp_path, capsys):
    store = tmp_path / "store"
    rc = main(["data", "prepare", str(phantom_dir), "--format", "nih", "--out", str(store), "--size", "16",
               "--workers", "1", "--split-seed", "3", "--val-fraction", "0.2", "--quiet"])
    assert rc == 0
    manifest = json.loads((store / "manifest.json").read_text())
    assert manifest["size"] == 16 and manifest["images"] == 40 and manifest["source"] == "nih"
    out = capsys.readouterr().out
    assert "no failed images" in out and str(manifest["counts"]["train"]) in out


def test_prepare_lists_failed_images_and_strict_stops(phantom_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in phantom_dir.iterdir():
        (broken / item.name).symlink_to(item, target_is_directory=item.is_dir())
    (broken / "images").unlink()
    (broken / "images").mkdir()
    names = sorted(p.name for p in (phantom_dir / "images").iterdir())
    for name in names:
        (broken / "images" / name).symlink_to(phantom_dir / "images" / name)
    (broken / "images" / names[0]).unlink()
    (broken / "images" / names[0]).write_bytes(b"\x89PNG broken")
    args = ["data", "prepare", str(broken), "--format", "nih", "--size", "16", "--workers", "1", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "s1")]) == 0
    assert "1 image(s) could not be decoded" in capsys.readouterr().out
    assert main(args + ["--out", str(tmp_path / "s2"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and names[0] in err and err.count("\n") == 1


def test_data_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert main(["data", "prepare", str(tmp_path / "nope"), "--format", "nih",
                 "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "not found" in err and err.count("\n") == 1
    assert main(["data", "phantom", str(tmp_path / "p"), "--n", "3"]) == 2
    assert "n=3" in capsys.readouterr().err


def test_an_option_the_format_lacks_names_the_valid_ones(phantom_dir, tmp_path, capsys):
    rc = main(["data", "prepare", str(phantom_dir), "--format", "nih", "--out", str(tmp_path / "s"),
               "--test-fraction", "0.2"])
    assert rc == 2 and "test_fraction" in capsys.readouterr().err


def test_format_choices_are_the_sources():
    from thoraxmae.datasets.sources import SOURCES

    assert set(FORMATS) == set(SOURCES)
    with pytest.raises(SystemExit):
        main(["data", "prepare", "x", "--format", "tiff", "--out", "y"])


@pytest.mark.parametrize("size", ["100000", "4097", "4"])
def test_prepare_size_out_of_range_is_one_line_before_anything_is_read(tmp_path, capsys, size):
    rc = main(["data", "prepare", str(tmp_path / "nowhere"), "--format", "nih", "--out", str(tmp_path / "s"),
               "--size", size])
    err = capsys.readouterr().err
    assert rc == 2 and err == (f"error: --size={size}: a store's image side must be an integer in [8, 4096] "
                               "px (default 768)\n")
    assert not (tmp_path / "s").exists()


def test_prepare_draws_its_progress_bar_on_stderr(phantom_dir, tmp_path, capsys):
    rc = main(["data", "prepare", str(phantom_dir), "--format", "nih", "--out", str(tmp_path / "s"), "--size",
               "16",
               "--workers", "1"])
    assert rc == 0 and "40/40" in capsys.readouterr().err


def test_prepare_default_size_is_768():
    from thoraxmae.cli import build_parser

    args = build_parser().parse_args(["data", "prepare", "x", "--format", "nih", "--out", "y"])
    assert args.size == 768

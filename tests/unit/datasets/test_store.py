"""The prepared store: fitting (aspect kept, never upscaled), labels and ids kept, manifest, failures, resume,
zero-copy reads, errors."""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.sources import load_source
from thoraxmae.datasets.store import FORMAT_VERSION, check_store, open_store, prepare_store, verify_store
from thoraxmae.datasets.store_shards import open_shard
from thoraxmae.datasets.table import SourceTable

LABELS = ("A", "B", "C")


def make_table(tmp_path, n=10, size=(24, 24), mask_zero=(), name="toy") -> SourceTable:
    """`n` gray PNGs whose pixel value is 20 * i, patients of two images, splits train/val/test by patient."""
    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        path = folder / f"img{i:03d}.png"
        Image.fromarray(np.full(size[::-1], 20 * i % 256, np.uint8)).save(path)
        split = ("train", "train", "val", "test")[(i // 2) % 4]
        rows.append({"image_id": f"img{i:03d}", "path": str(path), "patient_id": f"p{i // 2}", "split": split,
                     "reader": "image"})
    labels = (np.arange(n * 3).reshape(n, 3) % 4 == 0).astype(np.float32)
    mask = np.ones((n, 3), np.uint8)
    for i, j in mask_zero:
        mask[i, j] = 0
    return SourceTable(name, LABELS, pd.DataFrame(rows), labels, mask)


def test_store_keeps_pixels_labels_ids_and_order(tmp_path):
    table = make_table(tmp_path, mask_zero=[(1, 2)])
    manifest = prepare_store(table, tmp_path / "s", size=16, progress=False, shard_size=4)
    store = open_store(tmp_path / "s")
    assert (len(store) == 10 and store.size == 16 and store.label_names == LABELS
            and store.task == "multilabel")
    assert [s["rows"] for s in manifest["shards"]] == [4, 4, 2]
    for i in range(10):
        img = store.image(i)
        assert img.shape == (16, 16) and img.dtype == np.uint8 and np.all(img == 20 * i)
    np.testing.assert_array_equal(store.labels, table.labels)
    np.testing.assert_array_equal(store.mask, table.mask)
    assert store.mask[1, 2] == 0 and store.labels.dtype == np.float32 and store.mask.dtype == np.uint8
    assert list(store.image_ids) == list(table.frame["image_id"])
    assert list(store.patient_ids) == list(table.frame["patient_id"])
    np.testing.assert_array_equal(store.split_indices("val"), [4, 5])
    assert store.split_indices("train").dtype == np.int64


def test_manifest_counts_positives_and_hash(tmp_path):
    table = make_table(tmp_path, mask_zero=[(0, 0)])
    m = prepare_store(table, tmp_path / "s", size=16, progress=False)
    on_disk = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert on_disk["content_hash"] == m["content_hash"] and len(m["content_hash"]) == 64
    assert m["format_version"] == FORMAT_VERSION and m["source"] == "toy" and m["size"] == 16
    assert m["label_names"] == list(LABELS) and m["task"] == "multilabel"
    assert m["counts"] == {"train": 6, "val": 2, "test": 2} and m["images"] == 10
    assert m["positives"]["train"] == table.positives("train")  # masked positives do not count
    assert table.labels[0, 0] == 1 and m["positives"]["train"]["A"] == table.labels[[0, 1, 8, 9], 0].sum() - 1
    assert m["failed"] == [] and "aspect ratio kept" in m["resize"] and "never upscaled" in m["resize"]
    assert m["shorter_side"] == {"min": 16, "max": 16}


def _one_image_table(tmp_path, img: np.ndarray) -> SourceTable:
    path = tmp_path / "one.png"
    Image.fromarray(img).save(path)
    frame = pd.DataFrame([{"image_id": "w", "path": str(path), "patient_id": "p", "split": "train",
                           "reader": "image"}])
    return SourceTable("one", ("A",), frame, np.zeros((1, 1)), np.ones((1, 1)))


@pytest.mark.parametrize("shape, size, stored", [((40, 60), 20, (20, 30)), ((60, 40), 20, (30, 20)),
                                                 ((45, 60), 20, (20, 26)), ((40, 60), 64, (40, 60))])
def test_images_keep_their_aspect_ratio_and_are_never_upscaled(tmp_path, shape, size, stored):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    prepare_store(_one_image_table(tmp_path, img), tmp_path / "s", size=size)
    out = open_store(tmp_path / "s").image(0)
    assert out.shape == stored  # torchvision's Resize rounding: the longer side is int(size * long / short)
    if stored == shape:
        np.testing.assert_array_equal(out, img)  # the original pixels, as the reference crops them
    else:
        expected = Image.fromarray(img).resize(stored[::-1], Image.Resampling.BICUBIC)
        np.testing.assert_array_equal(out, np.asarray(expected))
    assert open_store(tmp_path / "s").shapes().tolist() == [list(stored)]


def test_images_are_zero_copy_views_of_the_shard_file(tmp_path):
    prepare_store(make_table(tmp_path), tmp_path / "s", size=16, progress=False)
    store = open_store(tmp_path / "s")
    a, b = store.image(3), store.image(3)
    assert not a.flags.owndata and not a.flags.writeable and np.shares_memory(a, b)


def test_unreadable_images_are_skipped_and_listed(tmp_path):
    table = make_table(tmp_path)
    bad = table.frame["path"].iloc[3]
    with open(bad, "wb") as fh:
        fh.write(b"not a png")
    m = prepare_store(table, tmp_path / "s", size=16, progress=False, shard_size=4)
    assert m["images"] == 9 and len(m["failed"]) == 1
    assert m["failed"][0]["image_id"] == "img003" and "img003.png" in m["failed"][0]["reason"]
    store = open_store(tmp_path / "s")
    assert "img003" not in set(store.image_ids) and len(store) == 9
    assert np.all(store.image(3) == 20 * 4)  # the next image moved up
    with pytest.raises(DataError, match="img003.png"):
        prepare_store(table, tmp_path / "strict", size=16, progress=False, strict=True)
    Image.fromarray(np.full((24, 24), 60, np.uint8)).save(bad)  # fixed: the re-run retries that shard only
    stamp = (tmp_path / "s" / "shards" / "shard-00001.arrow").stat().st_mtime_ns
    m = prepare_store(table, tmp_path / "s", size=16, progress=False, shard_size=4)
    assert m["images"] == 10 and m["failed"] == [] and np.all(open_store(tmp_path / "s").image(3) == 60)
    assert (tmp_path / "s" / "shards" / "shard-00001.arrow").stat().st_mtime_ns == stamp


def test_rerun_skips_complete_shards_and_redoes_changed_ones(tmp_path):
    table = make_table(tmp_path, n=12)
    out = tmp_path / "s"
    first = prepare_store(table, out, size=16, progress=False, shard_size=4)
    shard_files = [out / s["file"] for s in first["shards"]]
    stamps = [f.stat().st_mtime_ns for f in shard_files]
    (out / "shards" / "shard-00001.arrow.tmp").write_bytes(b"left over by an interrupted run")
    shard_files[2].unlink()  # as if interrupted before the last shard
    second = prepare_store(table, out, size=16, progress=False, shard_size=4)
    assert second["content_hash"] == first["content_hash"]
    assert [f.stat().st_mtime_ns for f in shard_files[:2]] == stamps[:2]
    assert not (out / "shards" / "shard-00001.arrow.tmp").exists()
    table.labels[5, 0] = 1 - table.labels[5, 0]  # a label of shard 1 changes: only shard 1 is redone
    third = prepare_store(table, out, size=16, progress=False, shard_size=4)
    assert shard_files[0].stat().st_mtime_ns == stamps[0] and shard_files[1].stat().st_mtime_ns != stamps[1]
    assert third["content_hash"] != first["content_hash"]
    assert open_store(out).labels[5, 0] == table.labels[5, 0]


def test_a_shorter_table_leaves_no_stale_shards(tmp_path):
    out = tmp_path / "s"
    prepare_store(make_table(tmp_path, n=12), out, size=16, progress=False, shard_size=4)
    prepare_store(make_table(tmp_path, n=6), out, size=16, progress=False, shard_size=4)
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-00000.arrow", "shard-00001.arrow"]
    assert len(open_store(out)) == 6


def test_worker_pool_gives_the_same_store(tmp_path):
    table = make_table(tmp_path, n=10)
    one = prepare_store(table, tmp_path / "one", size=16, progress=False, shard_size=4)
    two = prepare_store(table, tmp_path / "two", size=16, progress=False, shard_size=4, workers=2)
    assert one["content_hash"] == two["content_hash"]


def test_store_pickles_by_path(tmp_path):
    prepare_store(make_table(tmp_path), tmp_path / "s", size=16, progress=False)
    store = open_store(tmp_path / "s")
    blob = pickle.dumps(store)
    assert len(blob) < 1000  # no pixels travel
    again = pickle.loads(blob)
    assert len(again) == len(store) and np.array_equal(again.image(7), store.image(7))


def test_table_is_validated_before_decoding(tmp_path):
    table = make_table(tmp_path)
    table.frame.loc[1, "image_id"] = "img000"
    with pytest.raises(DataError, match="duplicate image ids"):
        prepare_store(table, tmp_path / "s", size=16, progress=False)
    assert not (tmp_path / "s").exists()


def test_unknown_reader_is_an_error(tmp_path):
    table = make_table(tmp_path)
    table.frame.loc[2, "reader"] = "tiff"
    with pytest.raises(DataError, match="tiff.*img002.png"):
        prepare_store(table, tmp_path / "s", size=16, progress=False)


def test_missing_manifest_and_wrong_version(tmp_path):
    with pytest.raises(DataError, match="not a prepared store .no manifest.json"):
        open_store(tmp_path)
    with pytest.raises(DataError, match="nowhere: not a prepared store .folder not found"):
        check_store(tmp_path / "nowhere")
    prepare_store(make_table(tmp_path), tmp_path / "s", size=16, progress=False)
    path = tmp_path / "s" / "manifest.json"
    m = json.loads(path.read_text())
    path.write_text(json.dumps({**m, "format_version": 1}))
    message = rf"^{tmp_path / 's'}: store format version 1, this thoraxmae reads version {FORMAT_VERSION}; "
    with pytest.raises(DataError, match=message):
        check_store(tmp_path / "s")
    with pytest.raises(DataError, match=message):
        open_store(tmp_path / "s")
    path.write_bytes(b"\xff\xfe not json")
    with pytest.raises(DataError, match="unreadable store manifest"):
        check_store(tmp_path / "s")


def test_check_store_reads_no_pixels_and_names_a_missing_shard(tmp_path):
    m = prepare_store(make_table(tmp_path), tmp_path / "s", size=16, shard_size=4)
    assert check_store(tmp_path / "s") == m | {"shards": m["shards"]}
    os.remove(tmp_path / "s" / m["shards"][2]["file"])
    with pytest.raises(DataError, match=r"shard-00002.arrow: store shard missing"):
        check_store(tmp_path / "s")


def test_missing_shard_is_named(tmp_path):
    m = prepare_store(make_table(tmp_path), tmp_path / "s", size=16, progress=False, shard_size=4)
    os.remove(tmp_path / "s" / m["shards"][1]["file"])
    with pytest.raises(DataError, match="shard-00001.arrow"):
        open_store(tmp_path / "s")


def test_dicom_rows_go_through_read_dicom(tmp_path):
    data = pytest.importorskip("pydicom.data")
    try:
        path = data.get_testdata_file("RG1_UNCR.dcm", download=False)
    except Exception:  # noqa: BLE001 - pydicom-data absent: nothing to test with
        path = None
    if not path:
        pytest.skip("pydicom-data's RG1_UNCR.dcm is not installed")
    frame = pd.DataFrame([{"image_id": "rg1", "path": str(path), "patient_id": "p", "split": "train",
                           "reader": "dicom"}])
    table = SourceTable("dicom", ("A",), frame, np.zeros((1, 1)), np.ones((1, 1)))
    prepare_store(table, tmp_path / "s", size=32, progress=False)
    img = open_store(tmp_path / "s").image(0)
    assert img.shape == (33, 32) and img.std() > 10  # a real radiograph (1955 rows x 1841), not a flat image


def test_phantom_through_the_nih_source_into_a_store(phantom_nih, phantom_store):
    table = load_source("nih", phantom_nih, split_seed=0)
    store = open_store(phantom_store)
    assert len(store) == len(table) and store.label_names == table.label_names and store.size == 64
    assert store.manifest["counts"] == table.split_counts()
    np.testing.assert_array_equal(store.labels, table.labels)
    assert list(store.splits) == list(table.frame["split"])
    img = store.image(0)
    assert 40 < img.mean() < 200 and img.std() > 20  # a chest, not a blank


def test_rgba_and_16_bit_pngs_are_converted_not_failed(tmp_path):
    table = make_table(tmp_path)
    rgba, deep = table.frame["path"].iloc[2], table.frame["path"].iloc[5]
    Image.fromarray(np.dstack([np.full((24, 24), 40, np.uint8)] * 3
                              + [np.full((24, 24), 255, np.uint8)])).save(rgba)
    Image.fromarray(np.full((24, 24), 4095, np.uint16)).save(deep)  # 12-bit white in a 16-bit PNG
    m = prepare_store(table, tmp_path / "s", size=16, progress=False)
    assert m["failed"] == [] and m["images"] == 10
    store = open_store(tmp_path / "s")
    assert np.all(store.image(2) == 40) and np.all(store.image(5) == 255)


def test_image_gone_since_listing_is_skipped_and_named(tmp_path):
    table = make_table(tmp_path)
    os.remove(table.frame["path"].iloc[6])
    m = prepare_store(table, tmp_path / "s", size=16, progress=False)
    assert [f["image_id"] for f in m["failed"]] == ["img006"]
    assert "img006.png" in m["failed"][0]["reason"] and "not found" in m["failed"][0]["reason"]
    with pytest.raises(DataError, match=r"img006\.png: image file not found"):
        prepare_store(table, tmp_path / "strict", size=16, progress=False, strict=True)


def test_progress_goes_to_the_callback_and_counts_the_reused_shards(tmp_path, capsys):
    table = make_table(tmp_path, n=12)
    calls = []
    prepare_store(table, tmp_path / "s", size=16, shard_size=4, progress=lambda done,
                  total: calls.append((done, total)))
    assert calls == [(0, 12), (4, 12), (8, 12), (12, 12)]
    os.remove(tmp_path / "s" / "shards" / "shard-00002.arrow")
    calls.clear()
    prepare_store(table, tmp_path / "s", size=16, shard_size=4, progress=lambda done,
                  total: calls.append((done, total)))
    assert calls == [(8, 12), (12, 12)]
    prepare_store(table, tmp_path / "s", size=16, shard_size=4, progress=True)  # a bool: no callback, no bar
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""  # library code draws nothing


def test_a_damaged_shard_is_detected_rebuilt_and_the_hash_follows_the_contents(tmp_path):
    table = make_table(tmp_path, n=12)
    out = tmp_path / "s"
    first = prepare_store(table, out, size=16, shard_size=4)
    assert verify_store(out) == first["content_hash"]
    shard = out / "shards" / "shard-00001.arrow"
    original = shard.read_bytes()
    pixel = original.index(bytes([20 * 5]) * 16 * 16)  # image 5 (pixel value 100), inside shard 1
    flipped = bytearray(original)
    flipped[pixel + 7] ^= 0x10  # one bit of one pixel
    shard.write_bytes(bytes(flipped))
    assert open_shard(shard).image(1)[0, 7] == 100 ^ 0x10  # the file really holds the flipped bit (image 5)
    with pytest.raises(DataError, match=r"shard-00001.arrow: contents do not match the hash recorded"):
        verify_store(out)
    with pytest.raises(DataError, match=r"shard-00001.arrow: contents do not match the hash recorded"):
        open_store(out)  # a training on this node checks it too (datasets.store_verify)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    second = prepare_store(table, out, size=16, shard_size=4)
    assert shard.read_bytes() == original and np.all(open_store(out).image(5) == 100)  # rebuilt, identical
    assert {p.name for p in (out / "shards").iterdir()
            if p.stat().st_mtime_ns != stamps[p.name]} == {shard.name}
    assert second["content_hash"] == first["content_hash"] == verify_store(out)


def test_the_content_hash_is_computed_from_the_pixels(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = prepare_store(make_table(tmp_path / "a"), tmp_path / "sa", size=16, shard_size=4)
    table = make_table(tmp_path / "b")
    # one pixel value 20 -> 21
    Image.fromarray(np.full((24, 24), 21, np.uint8)).save(table.frame["path"].iloc[1])
    b = prepare_store(table, tmp_path / "sb", size=16, shard_size=4)
    assert [s["sha256"] for s in a["shards"]][1:] == [s["sha256"] for s in b["shards"]][1:]
    assert a["shards"][0]["sha256"] != b["shards"][0]["sha256"] and a["content_hash"] != b["content_hash"]


@pytest.mark.parametrize("size", [100000, 4097, 7, 0, -1])
def test_size_is_bounded_before_anything_is_allocated(tmp_path, size):
    with pytest.raises(DataError, match=rf"^size={size}: a store's image side must be an integer in \[8, "
                                        r"4096\] px"):
        prepare_store(make_table(tmp_path), tmp_path / "s", size=size)
    assert not (tmp_path / "s").exists()


def test_an_image_that_shrinks_keeps_a_half_resolution_copy_from_the_original(tmp_path):
    big = np.random.default_rng(1).integers(0, 256, (50, 40), dtype=np.uint8)
    m = prepare_store(_one_image_table(tmp_path, big), tmp_path / "s", size=20)
    full, half = open_store(tmp_path / "s").levels(0)
    assert full.shape == (25, 20) and half.shape == (12, 10) and m["half_copies"] == 1
    np.testing.assert_array_equal(half,
                                  np.asarray(Image.fromarray(big).resize((10, 12), Image.Resampling.BICUBIC)))
    assert not half.flags.writeable and not half.flags.owndata  # a view of the shard file too
    m = prepare_store(_one_image_table(tmp_path, big), tmp_path / "t", size=40)  # the original: no copy
    assert open_store(tmp_path / "t").levels(0)[1] is None and m["half_copies"] == 0


def test_the_content_hash_covers_the_half_copies(tmp_path):
    table = make_table(tmp_path, n=4)
    out = tmp_path / "s"
    first = prepare_store(table, out, size=16)
    shard = out / "shards" / "shard-00000.arrow"
    data = bytearray(shard.read_bytes())
    full, half = open_store(out).levels(1)
    assert full.shape == (16, 16) and half.shape == (8, 8)
    at = data.index(bytes([20]) * 64, data.index(bytes([20]) * 256) + 256)  # image 1's 8 x 8 copy
    data[at] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match="shard-00000.arrow: contents do not match"):
        verify_store(out)
    assert prepare_store(table, out, size=16)["content_hash"] == first["content_hash"] == verify_store(out)

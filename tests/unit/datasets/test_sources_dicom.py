"""DICOM: read_dicom on the real radiograph RG1_UNCR.dcm and on small synthetic files; the "dicom" source."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.unit.datasets.fixtures_sources import write_dicom_file, write_dicom_folder
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.sources import load_source, read_dicom

RAMP = np.array([[0, 1000, 2000], [3000, 4095, 1500]], dtype=np.uint16)  # 12-bit stored values


@pytest.fixture(scope="module")
def radiograph() -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file("RG1_UNCR.dcm", download=False)
    assert path is not None, "RG1_UNCR.dcm not found: install the pydicom-data package (test extra)"
    return Path(path)


@pytest.fixture(scope="module")
def rg1(radiograph) -> np.ndarray:
    return read_dicom(radiograph)


def _modified_copy(src: Path, dst: Path, **elements: object) -> Path:
    ds = pydicom.dcmread(src)
    for key, value in elements.items():
        setattr(ds, key, value)
    ds.save_as(dst)
    return dst


def test_real_radiograph_shape_dtype_and_range(rg1, radiograph):
    ds = pydicom.dcmread(radiograph, stop_before_pixels=True)
    assert (ds.PhotometricInterpretation, int(ds.BitsStored)) == ("MONOCHROME1", 15)
    assert rg1.shape == (1955, 1841) and rg1.dtype == np.uint8
    assert rg1.std() > 20 and int(rg1.max()) - int(rg1.min()) > 150


def test_real_radiograph_is_inverted_to_bright_bone(rg1, radiograph, tmp_path):
    air = rg1[40:180, 0:240].mean()  # above the left shoulder, outside the body
    lung = rg1[400:800, 300:650].mean()  # upper right lung field (image left)
    spine = rg1[400:1400, 880:960].mean()  # spine / mediastinum
    assert air < lung - 30 and lung < spine - 40
    plain = read_dicom(_modified_copy(radiograph, tmp_path / "mono2.dcm",
                                      PhotometricInterpretation="MONOCHROME2"))
    np.testing.assert_array_equal(rg1.astype(np.int16), 255 - plain.astype(np.int16))


@pytest.mark.parametrize("photometric", ["RGB", "PALETTE COLOR"])
def test_unsupported_photometric_interpretation(radiograph, tmp_path, photometric):
    bad = _modified_copy(radiograph, tmp_path / "bad_pi.dcm", PhotometricInterpretation=photometric)
    with pytest.raises(DataError, match=rf"bad_pi\.dcm: PhotometricInterpretation '{photometric}' is not "
                                        r"supported"):
        read_dicom(bad)


def test_linear_window_centre_width(tmp_path):
    path = write_dicom_file(tmp_path / "w.dcm", RAMP, WindowCenter=2000, WindowWidth=2001)
    # LINEAR: x <= c - 0.5 - (w-1)/2 = 999.5 -> 0; x > c - 0.5 + (w-1)/2 = 2999.5 -> 255
    np.testing.assert_array_equal(read_dicom(path), [[0, 0, 128], [255, 255, 64]])


def test_first_of_several_windows_and_monochrome1(tmp_path):
    path = write_dicom_file(tmp_path / "w1.dcm", RAMP, photometric="MONOCHROME1",
                            WindowCenter=[2000, 500], WindowWidth=[2001, 100])
    np.testing.assert_array_equal(read_dicom(path), [[255, 255, 127], [0, 0, 191]])


def test_rescale_is_applied_before_the_window(tmp_path):
    path = write_dicom_file(tmp_path / "r.dcm", RAMP, RescaleSlope=2, RescaleIntercept=-1000,
                            WindowCenter=3000, WindowWidth=4001)  # values 2x - 1000 -> same picture as above
    np.testing.assert_array_equal(read_dicom(path), [[0, 0, 128], [255, 255, 64]])


def test_voi_lut_sequence_wins_over_window(tmp_path):
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new("LUTData", "US", [4095 - v for v in range(4096)])  # an inverting LUT
    path = write_dicom_file(tmp_path / "lut.dcm", RAMP, VOILUTSequence=[item], WindowCenter=0, WindowWidth=1)
    np.testing.assert_array_equal(read_dicom(path), [[255, 193, 130], [68, 0, 162]])


def test_min_max_without_window(tmp_path):
    path = write_dicom_file(tmp_path / "m.dcm", RAMP + 100, bits_stored=13)
    np.testing.assert_array_equal(read_dicom(path), [[0, 62, 125], [187, 255, 93]])


def test_eight_bit_values_pass_through(tmp_path):
    pixels = np.array([[0, 7, 128], [200, 255, 1]], dtype=np.uint8)
    path = write_dicom_file(tmp_path / "8.dcm", pixels, bits_stored=8, WindowCenter=10, WindowWidth=5)
    np.testing.assert_array_equal(read_dicom(path), pixels)


def test_rgb_and_multiframe_are_rejected(tmp_path):
    rgb = write_dicom_file(tmp_path / "colour.dcm", np.zeros((4, 4, 3), np.uint8), photometric="RGB",
                           bits_stored=8)
    with pytest.raises(DataError, match=r"colour\.dcm: PhotometricInterpretation 'RGB'"):
        read_dicom(rgb)
    frames = write_dicom_file(tmp_path / "cine.dcm", np.zeros((3, 4, 4), np.uint16))
    with pytest.raises(DataError, match=r"cine\.dcm: 3 frame\(s\)"):
        read_dicom(frames)


def test_not_a_dicom_file(tmp_path):
    (tmp_path / "notes.dcm").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.dcm: cannot read as DICOM"):
        read_dicom(tmp_path / "notes.dcm")


def test_dicom_source_reads_labels_splits_and_blanks(tmp_path):
    table = load_source("dicom", write_dicom_folder(tmp_path))
    assert table.label_names == ("Effusion", "Nodule") and table.task == "multilabel"
    assert table.split_counts() == {"train": 6, "val": 2, "test": 4}  # `validate` read as val
    assert set(table.frame.loc[table.frame["split"] == "val", "patient_id"]) == {"P3"}
    blanks = [i for i in range(12) if i % 5 == 0]
    assert table.mask[:, 1].tolist() == [0 if i in blanks else 1 for i in range(12)]
    assert table.labels[:, 0].tolist() == [i % 2 for i in range(12)]
    img = read_dicom(table.frame["path"].iloc[1])
    assert img.shape == (8, 8) and img.dtype == np.uint8


def test_dicom_source_without_split_or_patient_columns(tmp_path):
    table = load_source("dicom", write_dicom_folder(tmp_path, with_split=False, with_patient=False),
                        val_fraction=0.25, test_fraction=0.25)
    assert table.split_counts() == {"train": 6, "val": 3, "test": 3}
    assert (table.frame["patient_id"] == table.frame["image_id"]).all()


def test_dicom_source_carves_val_when_split_has_none(tmp_path):
    root = write_dicom_folder(tmp_path)
    csv = root / "labels.csv"
    csv.write_text(csv.read_text().replace(",validate,", ",train,"))
    f = load_source("dicom", root, val_fraction=0.25).frame
    assert f.loc[f["split"] == "val", "patient_id"].nunique() == 1  # 25% of 4 training patients


@pytest.mark.parametrize("old, new, match", [
    (",P1,train,1,", ",P1,train,2,", r"labels\.csv: line 5, column 'Effusion': value '2'"),
    (",P1,train,1,", ",P1,holdout,1,", r"labels\.csv: line 5: split 'holdout'"),
    (",P1,train,1,", ",,train,1,", r"labels\.csv: line 5: empty patient_id"),
    ("file,", "path,", r"labels\.csv: missing column 'file'"),
    (",Effusion,Nodule", ",Effusion,", r"labels\.csv: column 5 has an empty header"),
])
def test_dicom_source_bad_csv(tmp_path, old, new, match):
    root = write_dicom_folder(tmp_path)
    csv = root / "labels.csv"
    text = csv.read_text()
    assert old in text
    csv.write_text(text.replace(old, new, 1))
    with pytest.raises(DataError, match=match):
        load_source("dicom", root)


def test_dicom_source_needs_a_label_column(tmp_path):
    write_dicom_folder(tmp_path)
    (tmp_path / "labels.csv").write_text("file,patient_id\nsite0/patient0/image0.dcm,P0\n")
    with pytest.raises(DataError, match=r"labels\.csv: no label columns"):
        load_source("dicom", tmp_path)


def test_dicom_source_missing_file(tmp_path):
    root = write_dicom_folder(tmp_path)
    (root / "site1/patient2/image5.dcm").unlink()
    with pytest.raises(DataError, match=r"1 of 12 listed image\(s\) not found.*image5\.dcm"):
        load_source("dicom", root)
    assert len(load_source("dicom", root, missing="skip")) == 11

"""Tiny datasets written by hand in the exact on-disk formats of docs/data-formats.md (headers, file names,
folder layouts, value spellings), for the source tests. Images are real 8x8 PNG / JPEG / DICOM files."""
from __future__ import annotations

import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

NIH_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
              "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
NIH_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
              "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening",
              "Hernia")
NIH_FINDINGS = ("No Finding", "Cardiomegaly", "Effusion|Infiltration", "Atelectasis|Mass|Nodule", "Hernia",
                "Pneumothorax|Edema", "Fibrosis|Pleural_Thickening|Emphysema", "Pneumonia|Consolidation")
CHEXPERT_LABELS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion",
                   "Edema", "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
                   "Pleural Other", "Fracture", "Support Devices")
MIMIC_LABELS = tuple(sorted(CHEXPERT_LABELS))
UNCERTAIN_VALUES = ("1.0", "0.0", "-1.0", "")


def _image_bytes(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buf, format=fmt)
    return buf.getvalue()


PNG, JPEG = _image_bytes("PNG"), _image_bytes("JPEG")


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# ---------------------------------------------------------------- ChestX-ray14

@dataclass(frozen=True)
class NihEntry:
    name: str
    patient: int
    findings: str

    def multi_hot(self) -> list[int]:
        parts = set() if self.findings == "No Finding" else set(self.findings.split("|"))
        return [int(n in parts) for n in NIH_LABELS]


def nih_entries(n_patients: int = 12) -> list[NihEntry]:
    """Patients 1..n with 1-3 follow-ups each; findings cycle through NIH_FINDINGS."""
    out = []
    for p in range(1, n_patients + 1):
        for k in range(1 + p % 3):
            out.append(NihEntry(f"{p:08d}_{k:03d}.png", p, NIH_FINDINGS[len(out) % len(NIH_FINDINGS)]))
    return out


def nih_test_patients(n_patients: int = 12) -> set[int]:
    return {p for p in range(1, n_patients + 1) if p % 4 == 0}


def write_nih(root: Path, *, n_patients: int = 12, csv_name: str = "Data_Entry_2017_v2020.csv",
              trailing_comma: bool = False, sex_header: bool = False, layout: str = "flat",
              entries: list[NihEntry] | None = None) -> Path:
    """Data_Entry csv + PNGs (`flat`: images/; `nested`: images_001/images/, images_002/images/) + the lists.

    trailing_comma: the 2017 file's header (and rows) end with a comma; sex_header: `Patient Sex`.
    """
    entries = entries if entries is not None else nih_entries(n_patients)
    header = NIH_HEADER.replace("Patient Gender", "Patient Sex") if sex_header else NIH_HEADER
    end = "," if trailing_comma else ""
    lines = [header + end]
    for i, e in enumerate(entries):
        follow = int(e.name[9:12])
        lines.append(f"{e.name},{e.findings},{follow},{e.patient},{30 + i % 50},{'MF'[i % 2]},PA,"
                     f"2500,2048,0.143,0.143{end}")
    root.mkdir(parents=True, exist_ok=True)
    (root / csv_name).write_text("\n".join(lines) + "\n")
    for i, e in enumerate(entries):
        folder = root / "images" if layout == "flat" else root / f"images_{1 + i % 2:03d}" / "images"
        _put(folder / e.name, PNG)
    test = nih_test_patients(n_patients)
    (root / "train_val_list.txt").write_text("".join(f"{e.name}\n" for e in entries if e.patient not in test))
    (root / "test_list.txt").write_text("".join(f"{e.name}\n" for e in entries if e.patient in test))
    return root


def write_nih_paper_splits(folder: Path, n_patients: int = 12,
                           val_patients: tuple[int, ...] = (1, 2)) -> Path:
    """train_official.txt / val_official.txt / test_official.txt: `name` + 14 ints per line."""
    folder.mkdir(parents=True, exist_ok=True)
    test = nih_test_patients(n_patients)
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for e in nih_entries(n_patients):
        split = "test" if e.patient in test else "val" if e.patient in val_patients else "train"
        parts[split].append(f"{e.name} " + " ".join(str(v) for v in e.multi_hot()))
    for split, lines in parts.items():
        (folder / f"{split}_official.txt").write_text("\n".join(lines) + "\n")
    return folder


# ---------------------------------------------------------------- CheXpert

def chexpert_value(row: int, label: int) -> str:
    """The raw cell of train.csv data row `row` (0-based), label column `label` (CHEXPERT_LABELS index)."""
    return UNCERTAIN_VALUES[(row // 2 + label) % len(UNCERTAIN_VALUES)]  # frontal and lateral rows alike


def write_chexpert(root: Path, *, prefix: str = "CheXpert-v1.0-small", n_patients: int = 10) -> Path:
    """train.csv (each patient: 2 studies, a frontal and a lateral view each) + valid.csv (3 patients, 0/1
    only).

    Data row r of train.csv is patient r // 4 + 1, study (r // 2) % 2 + 1, frontal when r is even; its label
    cells are `chexpert_value(r, j)`. `prefix` "" writes paths without the `CheXpert-v1.0*/` folder.
    """
    header = "Path,Sex,Age,Frontal/Lateral,AP/PA," + ",".join(CHEXPERT_LABELS)
    train, row = [header], 0
    for p in range(1, n_patients + 1):
        for s in (1, 2):
            for v, view in ((1, "Frontal"), (2, "Lateral")):
                rel = f"train/patient{p:05d}/study{s}/view{v}_{view.lower()}.jpg"
                values = ",".join(chexpert_value(row, j) for j in range(len(CHEXPERT_LABELS)))
                train.append(f"{prefix + '/' if prefix else ''}{rel},Female,{40 + p},{view},"
                             f"{'AP' if view == 'Frontal' else ''},{values}")
                _put(root / rel, JPEG)
                row += 1
    valid = [header]
    for p in range(64541, 64544):
        for v, view in ((1, "Frontal"), (2, "Lateral")):
            rel = f"valid/patient{p:05d}/study1/view{v}_{view.lower()}.jpg"
            values = ",".join("1.0" if (p + j) % 3 == 0 else "0.0" for j in range(len(CHEXPERT_LABELS)))
            valid.append(f"{prefix + '/' if prefix else ''}{rel},Male,60,{view},"
                         f"{'PA' if view == 'Frontal' else ''},{values}")
            _put(root / rel, JPEG)
    (root / "train.csv").write_text("\n".join(train) + "\n")
    (root / "valid.csv").write_text("\n".join(valid) + "\n")
    return root


# ---------------------------------------------------------------- MIMIC-CXR-JPG

MIMIC_SUBJECTS = {"10000032": "train", "10000764": "train", "10000898": "train", "11000011": "train",
                  "12000001": "validate", "13000002": "test", "14000003": "test"}
MIMIC_VIEWS = ("PA", "AP", "LATERAL", "LL", "")


def _gz(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")


def write_mimic(root: Path) -> Path:
    """The three csv.gz files and files/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg; each subject 2 studies x 2 images.

    The last study of the last subject has images and a split but no chexpert row (it must be left out).
    """
    meta = [("dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns,"
             "StudyDate,"
             "StudyTime,ProcedureCodeSequence_CodeMeaning,ViewCodeSequence_CodeMeaning,"
             "PatientOrientationCodeSequence_CodeMeaning")]
    split = ["dicom_id,study_id,subject_id,split"]
    labels = ["subject_id,study_id," + ",".join(MIMIC_LABELS)]
    k = 0
    for n, (subject, part) in enumerate(MIMIC_SUBJECTS.items()):
        for s in range(2):
            study = str(50000000 + 10 * n + s)
            if not (n == len(MIMIC_SUBJECTS) - 1 and s == 1):
                labels.append(f"{subject},{study}," + ",".join(UNCERTAIN_VALUES[(k + j) % 4]
                                                               for j in range(len(MIMIC_LABELS))))
            for _ in range(2):
                dicom_id = f"{k:08x}-d1e2f3a4-5b6c7d8e-9f0a1b2c-3d4e5f60"
                view = MIMIC_VIEWS[k % len(MIMIC_VIEWS)]
                meta.append(f"{dicom_id},{subject},{study},CHEST (PA AND LAT),{view},3056,2544,21800506,"
                            f"213014.531,CHEST (PA AND LAT),postero-anterior,Erect")
                split.append(f"{dicom_id},{study},{subject},{part}")
                _put(root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom_id}.jpg",
                     JPEG)
                k += 1
    root.mkdir(parents=True, exist_ok=True)
    _gz(root / "mimic-cxr-2.0.0-metadata.csv.gz", meta)
    _gz(root / "mimic-cxr-2.0.0-split.csv.gz", split)
    _gz(root / "mimic-cxr-2.0.0-chexpert.csv.gz", labels)
    return root


# ---------------------------------------------------------------- COVIDx

COVIDX_CLASSES = ("normal", "pneumonia", "COVID-19")


def write_covidx(root: Path, version: str = "9A") -> Path:
    """train/test list files (`patient_id filename label source`, alphanumeric patient ids) + images."""
    sources = ("rsna", "cohen", "sirm", "ricord")
    train = []
    for i in range(24):
        patient = f"{i // 2}" if i % 3 else f"A{i // 2:03d}-covid"
        name = f"{'COVID' if i % 3 == 2 else 'img'}-{i:04d}.png"
        train.append(f"{patient} {name} {COVIDX_CLASSES[i % 3]} {sources[i % 4]}")
        _put(root / "train" / name, PNG)
    test = []
    for i in range(6):
        name = f"test-{i:03d}.jpg"
        test.append(f"T{i // 2}x {name} {COVIDX_CLASSES[i % 3]} {sources[i % 4]}")
        _put(root / "test" / name, JPEG)
    (root / f"train_COVIDx{version}.txt").write_text("\n".join(train) + "\n")
    (root / f"test_COVIDx{version}.txt").write_text("\n".join(test) + "\n")
    return root


# ---------------------------------------------------------------- DICOM

def write_dicom_file(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2",
                     bits_stored: int = 12,
                     **elements: object) -> Path:
    """A minimal valid DICOM file (explicit VR little endian) holding `pixels` ([H,W], [H,W,3] or [F,H,W])."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=bits_stored)
    for key, value in elements.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_dicom_folder(root: Path, *, with_split: bool = True, with_patient: bool = True) -> Path:
    """labels.csv (`file`, `patient_id`, `split`, Effusion, Nodule) + 12 tiny 12-bit DICOM files in
    sub-folders."""
    header = ["file"] + (["patient_id"] if with_patient else []) + (["split"] if with_split else [])
    lines = [",".join(header + ["Effusion", "Nodule"])]
    splits = {0: "train", 1: "train", 2: "train", 3: "validate", 4: "test", 5: "test"}
    for i in range(12):
        rel = f"site{i % 2}/patient{i // 2}/image{i}.dcm"
        pixels = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 60 + i).astype(np.uint16)
        write_dicom_file(root / rel, pixels, WindowCenter=2000, WindowWidth=4000)
        cells = [rel] + ([f"P{i // 2}"] if with_patient else []) + ([splits[i // 2]] if with_split else [])
        cells += [str(i % 2), "" if i % 5 == 0 else str((i // 2) % 2)]
        lines.append(",".join(cells))
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root

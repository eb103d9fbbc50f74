"""The storage tree of studies, spelled here and nowhere else.

    <storage_path>/                a local folder every node reaches, or an object-store URI
      <name>/                      Tune's folder of study `name`: its state, thoraxmae_spec.yaml
        thoraxmae_driver.lease     the live driver's record and heartbeat (study.driver)
        thoraxmae_tune_state.zip   the last good copy of Tune's state (study.run.tune_state)
        thoraxmae_damaged-<time>/  Tune's state files put aside by `study resume --from-last-good`
        train/                     the trials' Ray Train runs: train-<trial id>[-pretrain|-finetune]
      <name>-confirm/              Tune's folder of the study's confirmation runs
        part-<n>/                  Tune's folder of its n-th extension (n >= 2: other --top/--seeds)
      pretrain-registry/           shared pre-trainings, one folder per key (study.registry)

Every path is a datasets.storage.Location, so the same code serves a folder and an object store.
"""
from __future__ import annotations

import os
import re
import tempfile
import uuid
from pathlib import Path

from thoraxmae.datasets.storage import Location
from thoraxmae.study.errors import SpecError

TRAIN_DIR = "train"
CONFIRM_SUFFIX = "-confirm"
REGISTRY_DIR = "pretrain-registry"
# Ours, beside Tune's state in a study's folder. Never *.json or *.pkl: Tune copies every such file of the
# folder
# to its driver's staging folder on restore and back up to storage at each sync (a stale copy would overwrite
# it).
DRIVER_FILE = "thoraxmae_driver.lease"
LAST_GOOD_FILE = "thoraxmae_tune_state.zip"
DAMAGED_PREFIX = "thoraxmae_damaged-"


class StudyStorage:
    def __init__(self, root: Location | Path | str):
        self.root = Location.of(root)

    def study(self, name: str) -> Location:
        """Tune's folder of a study."""
        return self.root / name

    def train_runs(self, name: str) -> Location:
        """The folder of a study's Ray Train runs (one per trial and phase)."""
        return self.study(name) / TRAIN_DIR

    def confirm(self, name: str) -> Location:
        """Tune's folder of a study's confirmation."""
        return self.root / f"{name}{CONFIRM_SUFFIX}"

    def confirm_part(self, name: str, n: int) -> Location:
        """Tune's folder of part n of a study's confirmation: 1 the first, n >= 2 an extension inside it
        (a restored Tune experiment cannot take new trials)."""
        return self.confirm(name) if n == 1 else self.confirm(name) / f"part-{n}"

    def driver(self, name: str) -> Location:
        """The record of the driver running study `name` (host, pid, heartbeat), seen by every node."""
        return self.study(name) / DRIVER_FILE

    def last_good_state(self, name: str) -> Location:
        """The last copy of Tune's state of study `name` that was whole (one zip file)."""
        return self.study(name) / LAST_GOOD_FILE

    def damaged_state(self, name: str, stamp: str) -> Location:
        """Where `study resume --from-last-good` puts Tune's damaged state files aside (`stamp`: when)."""
        return self.study(name) / f"{DAMAGED_PREFIX}{stamp}"

    @property
    def registry(self) -> Location:
        """The shared pre-trainings of every study on this storage."""
        return self.root / REGISTRY_DIR

    def of_study(self, name: str) -> list[Location]:
        """Everything that belongs to study `name` alone (the registry is shared): what `study remove`
        deletes."""
        return [self.study(name), self.confirm(name)]

    def check_writable(self) -> None:
        """Before Ray: can this storage take a study? A file is written and deleted at the root (an object
        store: credentials, endpoint, bucket) or in the nearest existing folder above it (a local path: a
        regular file in the way, a read-only or pseudo file system), and nothing is left or created.
        SpecError names `storage_path`, the location and the reason."""
        try:
            if self.root.is_local:
                _probe_local(self.root.path)
            else:
                probe = self.root / f".thoraxmae-write-check-{uuid.uuid4().hex}"
                with self.root.fs.open_output_stream(probe.fs_path) as f:  # no folder markers
                    f.write(b"")
                self.root.fs.delete_file(probe.fs_path)
        except OSError as exc:  # pyarrow's file-system errors are OSErrors too
            raise SpecError(f"storage_path: cannot write to {self.root} ({_reason(exc)}); give a folder or "
                            "object-store URI this machine and every node can write (--set "
                            "storage_path=...)") \
                from None


def _probe_local(path: Path) -> None:
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"{existing} is a file, not a folder")
    with tempfile.NamedTemporaryFile(dir=existing, prefix=".thoraxmae-write-check-"):
        pass
    if existing != path and not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot create folders in {existing}")


def _reason(exc: OSError) -> str:
    """The reason of a file-system error in one short line: the system's words, or the object store's error
    and message without pyarrow's preamble and request id."""
    if exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split())
    aws = re.search(r"AWS Error (.*?)(?: \(Request ID: [^)]*\))?$", text)
    return (aws.group(1) if aws else text)[:300]

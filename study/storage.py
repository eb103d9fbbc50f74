"""The storage tree of studies, spelled here and nowhere else.

    <storage_path>/                a local folder every node reaches, or an object-store URI
      <name>/                      Tune's folder of study `name`: its state, thoraxmae_spec.yaml
        train/                     the trials' Ray Train runs: train-<trial id>[-pretrain|-finetune]
      <name>-confirm/              Tune's folder of the study's confirmation runs
      pretrain-registry/           shared pre-trainings, one folder per key (study.registry)

Every path is a datasets.storage.Location, so the same code serves a folder and an object store.
"""
from __future__ import annotations

from pathlib import Path

from thoraxmae.datasets.storage import Location

TRAIN_DIR = "train"
CONFIRM_SUFFIX = "-confirm"
REGISTRY_DIR = "pretrain-registry"


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

    @property
    def registry(self) -> Location:
        """The shared pre-trainings of every study on this storage."""
        return self.root / REGISTRY_DIR

    def of_study(self, name: str) -> list[Location]:
        """Everything that belongs to study `name` alone (the registry is shared): what `study remove` deletes."""
        return [self.study(name), self.confirm(name)]

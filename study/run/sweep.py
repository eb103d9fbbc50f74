"""Removing the checkpoints a failed attempt uploaded but no Train run record names."""
from __future__ import annotations

import logging
import re
from pathlib import Path

from thoraxmae.datasets.storage import Location

log = logging.getLogger(__name__)
# Ray Train's record of a run's registered checkpoints
CHECKPOINT_SNAPSHOT = "checkpoint_manager_snapshot.json"
CHECKPOINT_DIR = re.compile(r"checkpoint_[0-9][0-9_.-]*[0-9]")  # Ray Train's checkpoint folder names


def sweep_checkpoints(root: Location | Path | str) -> list[Location]:
    """Delete the checkpoint folders of Train runs under `root` that no run record names; returns them.

    Ray Train deletes the checkpoints it registered beyond `num_to_keep`, but a checkpoint uploaded by
    an attempt that failed before it was registered stays in storage. A run folder's records (Train's
    checkpoint_manager_snapshot.json, study.run.trial's final marker: every *.json beside the checkpoints)
    name the checkpoints that count; the others go. A run is only swept when one of the checkpoints
    its records name is there, so a naming Ray changes never deletes a registered checkpoint."""
    removed = []
    root = Location.of(root)
    for snapshot in root.walk_files(CHECKPOINT_SNAPSHOT):
        run = snapshot.parent
        try:
            children = run.iterdir()
            named = {m for f in children if f.name.endswith(".json")
                     for m in CHECKPOINT_DIR.findall(f.read_text())}
        except OSError as exc:
            log.warning("%s: not swept (%s)", run, exc)
            continue
        folders = [d for d in children if d.name.startswith("checkpoint_") and d.is_dir()]
        if not named & {d.name for d in folders}:
            continue
        for folder in folders:
            if folder.name not in named:
                try:
                    folder.rmtree()
                except OSError as exc:
                    log.warning("%s: not removed (%s)", folder, exc)
                    continue
                removed.append(folder)
    if removed:
        log.info("removed %d unregistered checkpoint folder(s) under %s", len(removed), root)
    return removed

"""Stores at full detail: the warnings a run prints before Ray starts when a store holds fewer pixels than
its smallest crops need to keep 0.9 of the reference's detail (datasets/resolution.py; docs/paper.md
"Crops and stored resolution"). A warning, not an error: a small store is a legitimate quick look."""
from __future__ import annotations

from typing import Any

PHASE_WORDS = {"pretrain": "pre-training", "finetune": "fine-tuning"}
Spec = Any  # study.spec.model.StudySpec


def smallest_crop_min(spec: Spec, phase: str, searched: bool = True) -> float:
    """The smallest crop scale a phase draws: its fixed `crop_min`, or the lowest one the search space
    holds."""
    values = [getattr(spec, phase).crop_min]
    dist = spec.search.space.get(f"{phase}.crop_min") if searched else None
    if dist is not None:
        values = [v for _, v in dist.bounds() if isinstance(v, int | float) and not isinstance(v, bool)]
    return float(min(values))


def store_detail_warnings(spec: Spec, phases: tuple[str, ...] | None = None,
                          searched: bool = True) -> list[str]:
    """One line per store smaller than its phases' smallest crops need (the neediest phase when a store
    serves two), naming the spec field, the store, its size and the size needed. A store that cannot be
    read is left to the file checks (study.spec.checks.check_files), which run first."""
    from thoraxmae.datasets.errors import DataError
    from thoraxmae.datasets.resolution import REFERENCE_SOURCE, smallest_store, store_detail_warning
    from thoraxmae.datasets.store_read import check_store
    from thoraxmae.trainers.models.presets import resolve_model

    output = resolve_model(spec.model).img_size
    worst: dict[str, tuple[int, str]] = {}  # store -> (size needed, line)
    for phase in phases or spec.phases:
        if getattr(spec, phase, None) is None:
            continue
        section = "pretrain_data" if phase == "pretrain" and spec.pretrain_data is not None else "data"
        store = spec.data_for(phase).store
        crop_min = smallest_crop_min(spec, phase, searched)
        try:
            manifest = check_store(store)
        except DataError:
            continue
        line = store_detail_warning(store, manifest, crop_min, output, PHASE_WORDS[phase])
        need = smallest_store(crop_min, source=REFERENCE_SOURCE, output=output)
        if line is not None and need > worst.get(str(store), (0, ""))[0]:
            worst[str(store)] = (need, f"{section}.store: {line}")
    return [line for _, line in worst.values()]

"""Meaning checks of a study spec across its sections (types and single-field ranges are pydantic's).

Each problem is one line starting with the field path, e.g. `search.space.pretrain.mask_ratio.high:`.
A search range is checked by building the phase config with each bound, so a bound must itself be
a valid value of the knob.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from thoraxmae.study.errors import SpecError
from thoraxmae.study.spec.coverage import coverage_problems, study_points
from thoraxmae.study.spec.model import StudySpec
from thoraxmae.study.spec.space import PHASES, check_value, split_knob
from thoraxmae.study.spec.tournament_plan import tournament_problems


def semantic_problems(spec: StudySpec) -> list[str]:
    """Meaning checks across sections; each problem starts with the field path."""
    problems = []
    for phase in PHASES:
        used = phase in spec.phases
        if used and getattr(spec, phase) is None:
            problems.append(f"{phase}: section required by stage `{spec.stage}`")
        if not used and getattr(spec, phase) is not None:
            problems.append(f"{phase}: not used by stage `{spec.stage}` (remove it, or use stage: pipeline)")
    if problems:
        return problems
    if spec.pretrain_data is not None and "pretrain" not in spec.phases:
        problems.append(f"pretrain_data: not used by stage `{spec.stage}`")
    if (spec.search.metric or "").startswith("test/"):  # selection on test is what inflates published numbers
        problems.append(f"search.metric: {spec.search.metric} is a test-split metric; a study selects on "
                        f"validation (e.g. val/mauc) and evaluates test once, on the selected weights")
    if spec.stage == "pipeline" and spec.finetune.init is not None:
        problems.append("finetune.init: set by the pipeline (each trial fine-tunes its own pre-trained "
                        "encoder)")
    if spec.confirm is not None and spec.confirm.pretrain_seeds > 1 and spec.stage != "pipeline":
        problems.append(f"confirm.pretrain_seeds: {spec.confirm.pretrain_seeds} needs stage pipeline "
                        f"(stage `{spec.stage}` pre-trains nothing to repeat); set it to 1")
    if spec.model.name in ("densenet121", "resnet50") and "pretrain" in spec.phases:
        problems.append(f"model.name: MAE pre-training needs a ViT, got `{spec.model.name}`")
    for section in ("data", "pretrain_data"):
        d = getattr(spec, section)
        if d is not None and d.in_chans != spec.model.in_chans:
            problems.append(f"{section}.in_chans={d.in_chans} differs from "
                            f"model.in_chans={spec.model.in_chans}")
    problems += _size_problems(spec)
    for knob, dist in spec.search.space.items():
        problems += _knob_problems(spec, knob, dist)
    if spec.search.tournament is not None:  # its recipes are every combination: no coverage, no sampler
        return problems + tournament_problems(spec)
    problems += coverage_problems(spec)
    if problems:
        return problems
    # + coverage points
    for i, (raw, point) in enumerate(zip(spec.search.points_to_evaluate, study_points(spec), strict=False)):
        problems += _point_problems(spec, i, raw, point)
    if spec.search.scheduler.max_t is not None and spec.search.scheduler.max_t > _max_epochs(spec):
        problems.append(f"search.scheduler.max_t={spec.search.scheduler.max_t} exceeds "
                        f"{spec.scored_phase}.epochs={_max_epochs(spec)}")
    if spec.search.scheduler.type == "asha" and spec.search.scheduler.grace_period > spec.max_t:
        problems.append(f"search.scheduler.grace_period={spec.search.scheduler.grace_period} exceeds "
                        f"max_t={spec.max_t}")
    return problems


def _size_problems(spec: StudySpec) -> list[str]:
    """Sizes that would only fail (or exhaust memory) inside a trial: patches per image."""
    from thoraxmae.trainers.models.presets import resolve_model

    model = resolve_model(spec.model)  # the preset's sizes, overridden by the spec's
    if model.kind != "vit" or model.num_patches <= MAX_PATCHES:
        return []
    return [(f"model.img_size={model.img_size}: {model.num_patches} patches of {model.patch_size} px per "
             "image, "
            f"at most {MAX_PATCHES} (e.g. 1024 px at patch 16)")]


def _max_epochs(spec: StudySpec) -> int:
    dist = spec.search.space.get(f"{spec.scored_phase}.epochs")
    if dist is not None:
        return int(max(v for _, v in dist.bounds()))
    return getattr(spec, spec.scored_phase).epochs


def _knob_problems(spec: StudySpec, knob: str, dist: Any) -> list[str]:
    path = f"search.space.{knob}"
    try:
        phase, field = split_knob(knob)
    except ValueError as exc:
        return [f"{path}: {exc}"]
    if phase not in spec.phases:
        return [f"{path}: stage `{spec.stage}` does not run {phase}; `{knob}` is not used"]
    if spec.stage == "pipeline" and knob == "finetune.init":
        return [f"{path}: set by the pipeline"]
    problems = [f"{path}.{where}: {why}" for where, why in dist.check()]
    base = getattr(spec, phase)
    for where, value in dist.bounds():
        reason = check_value(base, field, value)
        if reason:
            problems.append(f"{path}.{where}: {knob}={value!r} is not a valid value ({reason})")
    return problems


def _point_problems(spec: StudySpec, i: int, raw: Any, point: dict[str, Any]) -> list[str]:
    problems = []
    for knob, value in point.items():
        path = f"search.points_to_evaluate[{i}].{knob}"
        dist = spec.search.space.get(knob)
        origin = ("" if isinstance(raw, dict) and knob in raw
                  else " (the point leaves it out: the fixed value)")
        if dist is None:
            problems.append(f"{path}: not a searched knob (space has {sorted(spec.search.space)})")
        elif not dist.contains(value):
            problems.append(f"{path}: {value!r}{origin} is outside the space "
                            f"{dist.model_dump(exclude_none=True)}")
    return problems


# --- the files a spec names (before Ray starts; study submit skips them: they live on the cluster) -----
MAX_PATCHES = 4096  # tokens per image: a 64x64 patch grid (1024 px at patch 16); the paper uses 14x14


def check_files(spec: StudySpec, source: str = "<spec>") -> None:
    """SpecError naming the field unless every data store is a prepared store of this thoraxmae's format
    and every fine-tuning init (fixed or searched; a file, or an object-store URI fetched into the node's
    cache) is a checkpoint of a known format (and of init_format)."""
    for section, needs in _store_needs(spec).items():
        _check_store(getattr(spec, section).store, f"{source}: {section}.store", needs)
    ft = spec.finetune
    if ft is None:
        return
    space = spec.search.space
    formats = list(getattr(space.get("finetune.init_format"), "choices", None) or [ft.init_format])
    inits = [ft.init] if ft.init is not None else []
    inits += [c for c in getattr(space.get("finetune.init"), "choices", None) or [] if c is not None]
    where = f"{source}: finetune.init"
    for init in inits:
        target = _init_target(spec, init)
        _check_checkpoint(_local_init(target, where), formats, where, shown=str(target))


def _init_target(spec: StudySpec, init: Path | str) -> Path | str:
    """The checkpoint of an init: a path or URI, or a registered pre-training (`registry:<key>`,
    study.registry)."""
    from thoraxmae.datasets.storage import absolute
    from thoraxmae.study.registry import resolve_init

    return absolute(resolve_init(spec.storage_path, init))  # SpecError when a reference is not registered


def _local_init(target: Path | str, where: str) -> Path:
    """A local path of the checkpoint: an object-store one must be there, and is fetched to be read."""
    from thoraxmae.datasets.errors import DataError
    from thoraxmae.datasets.storage import Location, local_file

    loc = Location.of(target)
    if loc.is_local:
        return loc.path
    try:
        local = local_file(target) if loc.is_file() else None
    except (DataError, OSError) as exc:
        raise SpecError(f"{where}: {target}: cannot read it ({exc})") from None
    if local is None:
        raise SpecError(f"{where}: {target}: no such file on the object store")
    return local


def _store_needs(spec: StudySpec) -> dict[str, list]:
    """section -> the splits its phases read: a training split must hold one batch per worker (the largest
    batch the space can draw), the fine-tuning val split an image; the test split may be empty."""
    from thoraxmae.datasets.store_check import SplitNeed

    workers = spec.resources.workers_per_trial
    needs: dict[str, list] = {s: [] for s in ("data", "pretrain_data") if getattr(spec, s) is not None}
    for phase in ("pretrain", "finetune"):
        cfg = getattr(spec, phase)
        if cfg is None or spec.stage not in (phase, "pipeline"):
            continue
        section = "pretrain_data" if phase == "pretrain" and spec.pretrain_data is not None else "data"
        d, knob = getattr(spec, section), f"{phase}.batch_size"
        dist = spec.search.space.get(knob)
        batch = max([v for _, v in dist.bounds()] if dist is not None else [cfg.batch_size])
        needs[section].append(SplitNeed(d.train_split, f"{section}.train_split", batch, workers, knob))
        if phase == "finetune":
            needs[section] += [SplitNeed(d.val_split, f"{section}.val_split"),
                               SplitNeed(d.test_split, f"{section}.test_split", batch_size=0)]
    return needs


def _check_store(store: Path | str, where: str, needs: list | None = None) -> None:
    from thoraxmae.datasets import store_read, store_verify
    from thoraxmae.datasets.errors import DataError
    from thoraxmae.datasets.storage import Location
    from thoraxmae.datasets.store_check import check_store_use

    loc = Location.of(store)
    if loc.is_local and not (loc / store_read.MANIFEST).is_file():
        raise SpecError(f"{where}: no prepared store at {store} ({store_read.MANIFEST} missing); create one "
                        f"with `thoraxmae data prepare ... --out {store}`")
    try:
        manifest = check_store_use(store, needs or [], where=None)  # sizes, splits, batch: no pixel read
        if loc.is_local:  # bit-level, once per node (a worker node checks its own copy on first use)
            store_verify.verify_once(loc.path, manifest)
    except DataError as exc:
        raise SpecError(f"{where}: {exc}") from None


def _check_checkpoint(path: Path, formats: list[str], where: str, shown: str) -> None:
    """Of a known format, recognised from its content (trainers.checkpoints.check_checkpoint: no pickle
    ever runs, no tensor data is read), and of the spec's init_format unless that is `auto`. Messages
    name the checkpoint as `shown` (its URI, when `path` is the fetched copy)."""
    from thoraxmae.trainers import checkpoints
    from thoraxmae.trainers.errors import CheckpointError

    try:
        found = checkpoints.check_checkpoint(path)
    except CheckpointError as exc:
        raise SpecError(f"{where}: {str(exc).replace(str(path), shown)}") from None
    if "auto" not in formats and found not in formats:
        raise SpecError(f"{where}: {shown} is a {found} checkpoint, not {' or '.join(formats)}; set "
                        f"finetune.init_format to {found!r} or 'auto'")

"""The parts of a study's confirmation: its Tune experiments in `StudyStorage.confirm(name)` (the first) and
`StudyStorage.confirm_part(name, n)` (each extension), and what a new request adds to them.

A restored Tune experiment cannot take new trials, so a request that asks for more than the confirmation
holds (a larger --top, --seeds or --pretrain-seeds) runs its missing points as one more part. Two points are
the same run when they share the knobs, the pre-training seed and the fine-tuning seed (`point_id`, read
through TrialPlan, the one reader of a confirmation point). A recipe keeps the label the confirmation gave
it; a request with another reference recipe is refused, naming the confirmation and `--replace`.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from thoraxmae.datasets.storage import Location
from thoraxmae.study import schema
from thoraxmae.study.errors import SpecError
from thoraxmae.study.spec.model import StudySpec
from thoraxmae.study.spec.plan import CONFIRM_KEY, CONFIRM_RECIPE, TrialPlan
from thoraxmae.study.spec.space import same_point
from thoraxmae.study.storage import CONFIRM_SUFFIX, StudyStorage


def confirm_dir(spec: StudySpec) -> Location:
    return StudyStorage(spec.storage_path).confirm(spec.name)


def confirm_parts(spec: StudySpec) -> list[Location]:
    """The Tune experiments of the study's confirmation so far: the first, then each extension."""
    from thoraxmae.study.run.experiment import can_restore

    storage, parts = StudyStorage(spec.storage_path), []
    while True:
        folder = storage.confirm_part(spec.name, len(parts) + 1)
        if not can_restore(folder):
            return parts
        parts.append(folder)


def point_id(spec: StudySpec, point: dict[str, Any]) -> tuple[dict[str, Any], int | None, int | None]:
    """What makes two confirmation points the same run: the knobs, the pre-training seed (a point without one
    uses the spec's: confirmations written before the field) and the fine-tuning seed."""
    plan = TrialPlan.from_config(spec, {CONFIRM_KEY: point})
    return plan.knobs, plan.phase("pretrain").seed if "pretrain" in spec.phases else None, plan.seed


def _same_run(a: tuple, b: tuple) -> bool:
    return a[1:] == b[1:] and same_point(a[0], b[0])


def check_reference(spec: StudySpec, requested: list[dict[str, Any]], existing: list[dict[str, Any]]) -> None:
    """An extension keeps the confirmation's reference: a request with another reference recipe is refused."""
    ref = [p for p in requested if p[CONFIRM_RECIPE] == schema.RECIPE_REFERENCE]
    old = [p for p in existing if p.get(CONFIRM_RECIPE) == schema.RECIPE_REFERENCE]
    if ref and old and not same_point(point_id(spec, ref[0])[0], point_id(spec, old[0])[0]):
        knobs = ", ".join(f"{k}={v}" for k, v in point_id(spec, old[0])[0].items())
        where = confirm_dir(spec) if spec.storage_path is not None else f"{spec.name}{CONFIRM_SUFFIX}"
        raise SpecError(f"study `{spec.name}`: its confirmation in {where} has another reference "
                        f"recipe ({knobs}); extend it with that reference, or replace it: `thoraxmae study "
                        f"confirm {spec.name} --replace ...`")


def missing_points(spec: StudySpec, requested: list[dict[str, Any]],
                   existing: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The requested points no earlier part of the confirmation holds. A recipe that earlier parts confirmed
    keeps its label there; a label they gave to other knobs (a top-k median moves with k) gets a suffix."""
    check_reference(spec, requested, existing)
    done = [point_id(spec, p) for p in existing]
    labels: dict[str, dict[str, Any]] = {}
    for p, pid in zip(existing, done, strict=True):
        labels.setdefault(p.get(CONFIRM_RECIPE, ""), pid[0])
    renamed: dict[str, str] = {}
    out = []
    for p in requested:
        pid = point_id(spec, p)
        if any(_same_run(pid, d) for d in done):
            continue
        label = p[CONFIRM_RECIPE]
        if label not in renamed:
            same = [k for k, v in labels.items() if same_point(v, pid[0])]
            new, n = (same[0] if same else label), 2
            while not same and new in labels:
                new, n = f"{label}-{n}", n + 1
            labels[new] = pid[0]
            renamed[label] = new
        out.append({**p, CONFIRM_RECIPE: renamed[label]})
    return out


class ConfirmResult(NamedTuple):
    """What a `study confirm` request came to: its points, and the runs of every part of the confirmation."""

    requested: list[dict[str, Any]]
    runs: list[tuple[dict[str, Any], bool]]  # (point, failed) of every run in every part
    new: int  # runs this request added (the others were there already)

    def status(self, spec: StudySpec) -> tuple[int, int]:
        """(finished, failed) among the requested points."""
        ids = [(point_id(spec, p), failed) for p, failed in self.runs]
        found = [next((f for i, f in ids if _same_run(point_id(spec, p), i)), None) for p in self.requested]
        return sum(f is False for f in found), sum(f is True for f in found)


def remove_confirmation(spec: StudySpec, run_ids: list[str]) -> None:
    """`--replace`: soft-delete the confirmation's MLflow runs and delete its Tune folder (every part)."""
    from thoraxmae.study.tracking.uri import client_for

    client = client_for(spec.tracking.uri, write=True)
    for run_id in run_ids:
        client.delete_run(run_id)
    folder = confirm_dir(spec)
    if folder.exists():
        folder.rmtree()

"""One trial's plan, typed once from Ray Tune's config: the searched knob values, and for a confirmation
run its recipe and seed. The trial driver, the MLflow callback and confirmation all read a trial through
`TrialPlan.from_config(spec, config)`; nothing else decodes Tune's config dict.

A search trial's config is the flat knob dict Optuna sampled (`{"pretrain.mask_ratio": 0.9, ...}`). A
confirmation trial's config holds one point under `CONFIRM_KEY`: the knobs plus `CONFIRM_SEED` (the
fine-tuning seed, shared by every recipe: paired), `CONFIRM_RECIPE` (its label) and `CONFIRM_SOURCE` (the
search trial's MLflow run it repeats); in a pipeline study also `CONFIRM_PRETRAIN_SEED` (the pre-training
seed, shared by every recipe as well: a new seed is a new pre-training, keyed apart by the registry).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from thoraxmae.study.spec.model import StudySpec
from thoraxmae.study.spec.space import apply_knobs, knob_values

CONFIRM_KEY = "confirm"
CONFIRM_SEED, CONFIRM_RECIPE, CONFIRM_SOURCE = "confirm_seed", "confirm_recipe", "confirm_source_run"
CONFIRM_PRETRAIN_SEED = "confirm_pretrain_seed"


@dataclass(frozen=True)
class TrialPlan:
    spec: StudySpec
    knobs: dict[str, Any]  # the searched knobs, flat, Python scalars
    seed: int | None = None  # a confirmation run's fine-tuning seed
    recipe: str | None = None  # a confirmation run's recipe label
    source_run: str | None = None  # the search trial's MLflow run a confirmation run repeats
    pretrain_seed: int | None = None  # a pipeline confirmation run's pre-training seed (None: the spec's)
    _phases: dict[str, BaseModel] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_config(cls, spec: StudySpec, config: Mapping[str, Any]) -> TrialPlan:
        point = config.get(CONFIRM_KEY, config)
        knobs = knob_values(point, frozenset(spec.search.space))
        seed, pretrain_seed = point.get(CONFIRM_SEED), point.get(CONFIRM_PRETRAIN_SEED)
        return cls(spec, knobs, None if seed is None else int(seed), point.get(CONFIRM_RECIPE),
                   point.get(CONFIRM_SOURCE) or None, None if pretrain_seed is None else int(pretrain_seed))

    @property
    def is_confirmation(self) -> bool:
        return self.seed is not None

    def phase(self, name: str) -> BaseModel:
        """The typed config of phase `name`: the spec's, with this trial's knobs (and confirmation seeds)."""
        if name not in self._phases:
            cfg = apply_knobs(self.spec.phase_config(name), name, self.knobs)
            seed = {"finetune": self.seed, "pretrain": self.pretrain_seed}.get(name)
            if seed is not None:
                cfg = cfg.model_copy(update={"seed": seed})
            self._phases[name] = cfg
        return self._phases[name]

    def phases(self) -> dict[str, BaseModel]:
        return {p: self.phase(p) for p in self.spec.phases}

    def with_knobs(self, **updates: Any) -> TrialPlan:
        """A copy with knob values replaced (e.g. `finetune.init` resolved to a file)."""
        return dataclasses.replace(self, knobs={**self.knobs, **updates}, _phases={})

    def scored_epochs(self) -> int:
        """The epochs the scored phase must reach to count as complete (ASHA's max_t caps them)."""
        epochs = self.phase(self.spec.scored_phase).epochs
        if self.spec.search.scheduler.type == "asha":
            epochs = min(epochs, self.spec.max_t)
        return epochs

"""Search-space syntax of the spec (optuna's `suggest_*` vocabulary) and its translation to Optuna.

A knob is named by its spec path (`finetune.layer_decay`, `pretrain.mask_ratio`); the same name is
the Optuna parameter, the key of Tune's config and the MLflow param. `knob_values` turns one trial's
config back into typed phase configs: the one place a Tune config dict becomes typed again.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from thoraxmae.trainers.config import FinetuneConfig, PretrainConfig, unsearchable_fields

if TYPE_CHECKING:
    import optuna

PHASES: dict[str, type[BaseModel]] = {"pretrain": PretrainConfig, "finetune": FinetuneConfig}
# Fields that are not recipe knobs (`setting()` in trainers/config.py): smoke-run caps, bookkeeping.
NOT_SEARCHABLE = unsearchable_fields(PretrainConfig) | unsearchable_fields(FinetuneConfig)
Choice = bool | int | float | str


def _range_problems(low: float, high: float, log: bool) -> list[tuple[str, str]]:
    """What a numeric space's bounds break: (field, reason) pairs."""
    problems = []
    if low > high:
        problems.append(("high", f"high={high} is below low={low}"))
    if log and low <= 0:
        problems.append(("low", f"log scale needs low > 0, got {low}"))
    return problems


class FloatSpace(BaseModel):
    """`trial.suggest_float(name, low, high, log=..., step=...)`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    def check(self) -> list[tuple[str, str]]:
        problems = _range_problems(self.low, self.high, self.log)
        if self.log and self.step is not None:
            problems.append(("step", "step and log cannot be combined (optuna)"))
        return problems

    def bounds(self) -> list[tuple[str, Any]]:
        return [("low", self.low), ("high", self.high)]

    def contains(self, value: Any) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high

    def to_optuna(self) -> optuna.distributions.BaseDistribution:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)


class IntSpace(BaseModel):
    """`trial.suggest_int(name, low, high, step=..., log=...)`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    def check(self) -> list[tuple[str, str]]:
        problems = _range_problems(self.low, self.high, self.log)
        if self.log and self.step != 1:
            problems.append(("step", "step > 1 and log cannot be combined (optuna)"))
        return problems

    def bounds(self) -> list[tuple[str, Any]]:
        return [("low", self.low), ("high", self.high)]

    def contains(self, value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and self.low <= value <= self.high

    def to_optuna(self) -> optuna.distributions.BaseDistribution:
        from optuna.distributions import IntDistribution

        return IntDistribution(self.low, self.high, log=self.log, step=self.step)


class CategoricalSpace(BaseModel):
    """`trial.suggest_categorical(name, choices)`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["categorical"]
    choices: list[Choice] = Field(min_length=1)

    def check(self) -> list[tuple[str, str]]:
        if len(set(map(repr, self.choices))) != len(self.choices):
            return [("choices", f"repeated choice in {self.choices}")]
        return []

    def bounds(self) -> list[tuple[str, Any]]:
        return [(f"choices[{i}]", c) for i, c in enumerate(self.choices)]

    def contains(self, value: Any) -> bool:
        return any(type(value) is type(c) and value == c for c in self.choices) or value in self.choices

    def to_optuna(self) -> optuna.distributions.BaseDistribution:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(tuple(self.choices))


KnobSpace = Annotated[FloatSpace | IntSpace | CategoricalSpace, Field(discriminator="type")]


def split_knob(knob: str) -> tuple[str, str]:
    """`finetune.layer_decay` -> ("finetune", "layer_decay"); ValueError naming the knob otherwise."""
    phase, _, field = knob.partition(".")
    if phase not in PHASES or not field or "." in field:
        raise ValueError(f"`{knob}` is not a knob; knobs are spec paths such as `finetune.layer_decay` "
                         f"or `pretrain.mask_ratio`")
    cls = PHASES[phase]
    if field not in cls.model_fields or field in NOT_SEARCHABLE:
        allowed = sorted(f for f in cls.model_fields if f not in NOT_SEARCHABLE)
        raise ValueError(f"`{knob}` is not a {phase} knob; {phase} knobs: {', '.join(allowed)}")
    return phase, field


def check_value(base: BaseModel, field: str, value: Any) -> str | None:
    """Build the phase config with `field=value`: None when valid, else the reason (one line)."""
    from pydantic import ValidationError

    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number"
    try:
        type(base).model_validate({**base.model_dump(), field: value})
    except ValidationError as exc:
        return "; ".join(str(e["ctx"]["error"]) if e["type"] == "value_error" else e["msg"]
                         for e in exc.errors())
    return None


def same_point(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two recipes set the same knobs to the same values (numbers to 1e-9 relative): a confirmation
    candidate equal to the reference recipe is the reference."""
    if set(a) != set(b):
        return False
    for knob, x in a.items():
        y = b[knob]
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (x, y))
        if not (math.isclose(float(x), float(y), rel_tol=1e-9) if numbers else x == y):
            return False
    return True


def to_optuna_space(space: Mapping[str, FloatSpace | IntSpace | CategoricalSpace]) -> dict:
    """The spec's space as `{knob: optuna.distributions.*}` for OptunaSearch."""
    return {knob: dist.to_optuna() for knob, dist in space.items()}


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Tune may hand the config nested (`{"finetune": {"drop_path": 0.1}}`) or flat; return it flat."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{path}."))
        else:
            flat[path] = value
    return flat


def knob_values(config: Mapping[str, Any], knobs: set[str] | frozenset[str]) -> dict[str, Any]:
    """Only the searched knobs of a trial's config, flat, with Python scalar types (numpy -> builtin)."""
    flat = flatten_config(config)
    out = {}
    for knob in sorted(knobs):
        if knob not in flat:
            raise KeyError(f"trial config lacks the searched knob `{knob}` (has {sorted(flat)})")
        value = flat[knob]
        out[knob] = value.item() if hasattr(value, "item") else value
    return out


def apply_knobs(base: BaseModel, phase: str, values: Mapping[str, Any]) -> BaseModel:
    """A copy of the phase config `base` with this phase's knobs from `values` set (validated)."""
    fields = {k.split(".", 1)[1]: v for k, v in values.items() if k.startswith(f"{phase}.")}
    return type(base).model_validate({**base.model_dump(), **fields})

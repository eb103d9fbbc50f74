"""The data config that datasets/ consumes (composed into the study spec as `data`)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

# docs/data-formats.md: NIH ChestX-ray14 pixel statistics used by the paper (same for the 3 channels).
NIH_MEAN = 0.5056
NIH_STD = 0.252
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_uri(store: Path | str) -> bool:
    """True for an object-store URI (`s3://...`, `gs://...`: any `scheme://`); a Path or a plain path is
    local."""
    return isinstance(store, str) and bool(_URI.match(store))


def path_or_uri(value: object) -> object:
    """Text as a config field holds it: an object-store URI stays a str (a Path would fold `s3://b/x` into a
    local `s3:/b/x`), any other text is a Path."""
    return Path(value) if isinstance(value, str) and not is_uri(value) else value


# A local file or folder (a Path) or an object-store URI (a str): stores, storage_path, finetune.init.
PathOrUri = Annotated[Path | str, BeforeValidator(path_or_uri)]


def _types(annotation: Any) -> set[Any]:
    """The types an annotation admits, through Optional / Union / Annotated / Literal values."""
    origin = get_origin(annotation)
    if origin is Literal:
        return {type(v) for v in get_args(annotation)}
    if origin is None:
        return {annotation}
    return set().union(*(_types(a) for a in get_args(annotation)))


class ConfigModel(BaseModel):
    """The base of every config a user writes (the spec's sections, the trainers' jobs): unknown keys are
    errors, and a boolean is not a number. pydantic's lax mode reads `epochs: true` as 1; here it is an
    error naming the field."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name in cls.model_fields:
            types = _types(cls.model_fields[info.field_name].annotation)
            if types & {int, float} and not types & {bool, Any}:
                raise PydanticCustomError("bool_is_not_a_number",
                                          "Input should be a number, not the boolean {value}",
                                          {"value": str(value).lower()})
        return value


class DataConfig(ConfigModel):
    """Where the prepared store is and how workers read it."""

    model_config = ConfigDict(extra="forbid")

    store: PathOrUri = Field(description="prepared store: a folder (a Path) or an object-store URI such as "
                              "s3://bucket/stores/nih768 (a str; fetched once per node, datasets.remote)")
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    mean: float = Field(NIH_MEAN, gt=0, lt=1)
    std: float = Field(NIH_STD, gt=0, lt=1)
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per Ray Train worker")
    in_chans: int = Field(3, description="channels fed to the model (gray copied to 3)")

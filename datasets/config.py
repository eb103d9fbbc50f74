"""The data config that datasets/ consumes (composed into the study spec as `data`)."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

# docs/data-formats.md: NIH ChestX-ray14 pixel statistics used by the paper (same for the 3 channels).
NIH_MEAN = 0.5056
NIH_STD = 0.252
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataConfig(BaseModel):
    """Where the prepared store is and how workers read it."""

    model_config = ConfigDict(extra="forbid")

    store: Path = Field(description="prepared store folder (thoraxmae data prepare --out)")
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    mean: float = Field(NIH_MEAN, gt=0, lt=1)
    std: float = Field(NIH_STD, gt=0, lt=1)
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per Ray Train worker")
    in_chans: int = Field(3, description="channels fed to the model (gray copied to 3)")

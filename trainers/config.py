"""Typed configs the trainers consume; study/spec/model.py composes them (trainers never import study).

Field names are the knob names of docs/architecture.md: `pretrain.mask_ratio` is `PretrainConfig.mask_ratio`.
Defaults are the paper's ViT-S values (docs/paper.md); tiny models override them.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from thoraxmae.datasets.config import ConfigModel, PathOrUri

# Checkpoint file formats (trainers/checkpoint_files.py): ours, the paper's released dict, a plain timm
# state dict. This Literal is the one list of them.
CheckpointFormat = Literal["thoraxmae", "medical_mae", "timm"]


def knob(default: Any, unit: str, *, paper: bool = True, **constraints: Any) -> Any:
    """A recipe knob: the one place its unit (report labels) and its paper status are written. `paper`:
    the default IS the paper's ViT-S value and belongs to the reference recipe the report compares with
    (docs/paper.md). study/schema.py derives the knob lists and the paper recipe from these fields."""
    return Field(default, json_schema_extra={"knob": True, "unit": unit, "paper": paper}, **constraints)


def setting(default: Any, **kwargs: Any) -> Any:
    """A field that is not a recipe knob and cannot be searched (where to start from, smoke-run caps)."""
    return Field(default, json_schema_extra={"searchable": False}, **kwargs)


class ModelConfig(ConfigModel):
    """A ViT (timm blocks) or a CNN baseline. `name` picks a preset (trainers/models/presets.py); a field
    left None takes the preset's value, a field given overrides it (e.g. `decoder_depth: 4`)."""

    model_config = ConfigDict(extra="forbid")

    # vit_small_patch16 | vit_base_patch16 | vit_tiny_test | densenet121 | resnet50
    name: str = "vit_small_patch16"
    img_size: int | None = Field(None, ge=16)
    patch_size: int | None = Field(None, ge=2)
    in_chans: int = Field(3, ge=1)
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float = 4.0
    # MAE decoder (docs/paper.md: ViT-S 512-dim, 2 blocks, 16 heads; ViT-B 512-dim, 8 blocks, 16 heads)
    decoder_embed_dim: int | None = None
    decoder_depth: int | None = None
    decoder_num_heads: int | None = None
    global_pool: Literal["avg", "token"] = "avg"

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        from thoraxmae.trainers.models.presets import resolve_model  # presets import this module

        resolve_model(self)  # an unknown name or sizes that do not fit raise here, naming the field
        return self


class PretrainConfig(ConfigModel):
    """MAE pre-training (docs/paper.md: 800 epochs, blr 1.5e-4, batch 2048, mask 0.9, crop 0.5-1.0)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = knob(800, "epochs", paper=False, ge=1)
    warmup_epochs: int = Field(40, ge=0)
    batch_size: int = Field(256, ge=1, description="per-worker batch per optimizer step (before "
                                                   "accumulation)")
    accum_iter: int = Field(1, ge=1)
    blr: float = knob(1.5e-4, "base LR, log scale", gt=0,
                      description="base LR; lr = blr * global_batch / 256")
    min_lr: float = Field(0.0, ge=0)
    weight_decay: float = knob(0.05, "AdamW coefficient", ge=0)
    mask_ratio: float = knob(0.90, "fraction of patches masked", gt=0, lt=1)
    crop_min: float = knob(0.5, "min. crop scale", gt=0, le=1)
    norm_pix_loss: bool = knob(False, "on/off")
    hflip: bool = True
    checkpoint_every: int = setting(1, ge=1, description="epochs between checkpoints")
    max_steps_per_epoch: int | None = setting(None, ge=1, description="cap for smoke runs")
    seed: int = 0
    # LR after warm-up (trainers.optim.lr_at, docs/paper.md "Anytime schedules"): cosine (the paper's) depends
    # on
    # `epochs`; constant does not (a checkpoint at e is the same for every length); wsd = constant, then a
    # linear
    # decay over the last `decay_epochs`, a branch from the constant run's checkpoint at epochs -
    # decay_epochs.
    schedule: Literal["cosine", "constant", "wsd"] = "cosine"
    decay_epochs: int | None = Field(None, ge=1, description="wsd: epochs of the final linear decay")
    continue_from: PathOrUri | None = setting(
        None, description="a constant-schedule checkpoint.pt of this recipe to continue from (its epoch < "
                          "epochs); "
        "trainers.continuation checks it")

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        if self.warmup_epochs >= self.epochs and self.epochs > 1 and self.schedule != "constant":
            raise ValueError(f"pretrain.warmup_epochs={self.warmup_epochs} must be < "
                             f"pretrain.epochs={self.epochs}")
        if self.schedule == "wsd":
            if self.decay_epochs is None or self.decay_epochs > self.epochs - self.warmup_epochs:
                raise ValueError(f"pretrain.decay_epochs={self.decay_epochs}: schedule wsd needs 1 <= "
                                 "decay_epochs <= epochs - warmup_epochs = "
                                 f"{self.epochs - self.warmup_epochs}")
        elif self.decay_epochs is not None:
            raise ValueError(f"pretrain.decay_epochs={self.decay_epochs} applies only to schedule wsd "
                             f"(pretrain.schedule={self.schedule})")
        if self.continue_from is not None and self.schedule == "cosine":
            raise ValueError("pretrain.continue_from: a cosine schedule cannot be continued (its LR at every "
                             "epoch depends on pretrain.epochs, so it is not horizon-free); use schedule "
                             "constant or wsd")
        return self


class FinetuneConfig(ConfigModel):
    """Multi-label fine-tuning (docs/paper.md: 75 epochs, blr 2.5e-4, LLRD 0.55, DropPath 0.2, RandAug m6)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = knob(75, "epochs", paper=False, ge=1)
    warmup_epochs: int = Field(5, ge=0)
    batch_size: int = Field(128, ge=1, description="per-worker batch per optimizer step")
    accum_iter: int = Field(1, ge=1)
    blr: float = knob(2.5e-4, "base LR, log scale", gt=0,
                      description="base LR; lr = blr * global_batch / 256")
    min_lr: float = Field(1e-5, ge=0)
    weight_decay: float = knob(0.05, "AdamW coefficient", ge=0)
    layer_decay: float = knob(0.55, "LR factor per block", gt=0, le=1)
    drop_path: float = knob(0.2, "DropPath rate", ge=0, lt=1)
    randaug_magnitude: int = knob(6, "RandAug magnitude", ge=0, le=10,
                                  description="timm rand-m{M}-mstd0.5-inc1 (scale 0-10); 0 disables")
    crop_min: float = knob(0.08, "min. crop scale", gt=0, le=1)
    hflip: bool = True  # docs/paper.md: timm's create_transform default, flip p=0.5
    init: PathOrUri | None = Field(None, description="checkpoint to start from: a file (a Path) or an "
                                                     "object-store "
                                    "URI such as s3://bucket/ckpt/mae.pt (a str; fetched once per node)")
    init_format: Literal["auto", CheckpointFormat] = setting("auto",
                                                             description="auto: recognised from the content")
    bootstrap: int = setting(1000, ge=0, description="bootstrap resamples for the test mAUC CI")
    max_steps_per_epoch: int | None = setting(None, ge=1, description="cap for smoke runs")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> FinetuneConfig:
        if self.warmup_epochs >= self.epochs and self.epochs > 1:
            raise ValueError(f"finetune.warmup_epochs={self.warmup_epochs} must be < "
                             f"finetune.epochs={self.epochs}")
        return self


def knob_fields(cls: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """A phase config's recipe knobs: field -> {"unit", "paper", "default", "low", "high"} (from `knob()`)."""
    out = {}
    for name, info in cls.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("knob"):
            bound = {a: getattr(m, a) for m in info.metadata for a in ("ge", "gt", "le", "lt")
                     if hasattr(m, a)}
            out[name] = {"unit": extra["unit"], "paper": extra["paper"], "default": info.default,
                         "low": bound.get("ge", bound.get("gt")), "high": bound.get("le", bound.get("lt"))}
    return out


def unsearchable_fields(cls: type[BaseModel]) -> frozenset[str]:
    """Fields marked `setting()`: not recipe knobs, never searched."""
    return frozenset(name for name, info in cls.model_fields.items()
                     if isinstance(info.json_schema_extra, dict)
                     and info.json_schema_extra.get("searchable") is False)

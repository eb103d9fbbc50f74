"""Models: the MAE (pre-training), the ViT classifier and CNN baselines (fine-tuning), and presets."""
from thoraxmae.trainers.models.classifier import build_classifier
from thoraxmae.trainers.models.mae import MaskedAutoencoderViT, build_mae, num_visible
from thoraxmae.trainers.models.presets import PRESETS, ResolvedModel, resolve_model
from thoraxmae.trainers.models.unwrap import unwrap

__all__ = ["PRESETS", "MaskedAutoencoderViT", "ResolvedModel", "build_classifier", "build_mae", "num_visible",
           "resolve_model", "unwrap"]

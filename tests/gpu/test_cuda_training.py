"""On a CUDA machine: bf16 autocast MAE and fine-tuning steps, and a 1-GPU Ray Train fine-tune.
Skipped without CUDA (CI has none); run with `pytest tests/gpu` on a GPU host."""
from __future__ import annotations

import pytest
import torch

from thoraxmae.trainers.config import ModelConfig
from thoraxmae.trainers.models import build_classifier, build_mae
from thoraxmae.trainers.runtime import autocast

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
VIT_S = ModelConfig(name="vit_small_patch16")


def test_mae_step_under_bf16_autocast_is_finite_and_float32_loss():
    device = torch.device("cuda")
    model = build_mae(VIT_S, norm_pix_loss=False).to(device)
    images = torch.randn(8, 3, 224, 224, device=device)
    with autocast(device):
        loss, pred, _ = model(images, mask_ratio=0.9)
    assert pred.dtype == torch.bfloat16 and loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_vit_b_mae_with_its_8_block_decoder_steps_under_bf16():
    device = torch.device("cuda")
    model = build_mae(ModelConfig(name="vit_base_patch16")).to(device)  # docs/paper.md: dec512d8b
    assert len(model.decoder_blocks) == 8
    with autocast(device):
        loss, _, mask = model(torch.randn(4, 3, 224, 224, device=device))  # the model's mask ratio, 0.9
    assert torch.isfinite(loss) and mask.sum(1).tolist() == [177.0] * 4  # 196 - 19 visible
    loss.backward()


def test_evaluate_on_cuda_matches_cpu(phantom_store, tmp_path):
    from thoraxmae.trainers.checkpoints import save_model
    from thoraxmae.trainers.evaluate import evaluate_checkpoint

    tiny = ModelConfig(name="vit_tiny_test", depth=2)
    model = build_classifier(tiny, 14, drop_path=0.0)
    path = save_model(tmp_path / "best_model.pt", model.state_dict(), model_config=tiny.model_dump())
    cpu = evaluate_checkpoint(path, phantom_store, bootstrap=20)
    gpu = evaluate_checkpoint(path, phantom_store, bootstrap=20, device="cuda")
    assert abs(cpu.logits - gpu.logits).max() < 1e-3 and abs(cpu.mauc - gpu.mauc) < 1e-3


def test_classifier_step_under_bf16_autocast():
    device = torch.device("cuda")
    model = build_classifier(VIT_S, 14, drop_path=0.2).to(device)
    with autocast(device):
        logits = model(torch.randn(4, 3, 224, 224, device=device))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(),
                                                                torch.ones(4, 14, device=device))
    loss.backward()
    assert torch.isfinite(loss)


def test_one_gpu_ray_train_finetune(phantom_store, tmp_path):
    import ray
    import ray.train

    from thoraxmae.datasets.config import DataConfig
    from thoraxmae.trainers.api import FinetuneJob, finetune_trainer
    from thoraxmae.trainers.config import FinetuneConfig

    if not ray.is_initialized():
        ray.init(num_cpus=4, num_gpus=1, include_dashboard=True, dashboard_host="127.0.0.1")
    tiny = ModelConfig(name="vit_tiny_test", depth=2)
    job = FinetuneJob(model=tiny, data=DataConfig(store=phantom_store),
                      finetune=FinetuneConfig(epochs=2, warmup_epochs=1, batch_size=16, bootstrap=10))
    result = finetune_trainer(job, ray.train.ScalingConfig(num_workers=1, use_gpu=True),
                              ray.train.RunConfig(name="gpu", storage_path=str(tmp_path))).fit()
    assert result.metrics["epoch"] == 2 and result.metrics["cost/gpu_hours"] > 0

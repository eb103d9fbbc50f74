"""Model step speed: MAE pre-training (mask 0.75 and 0.9) and fine-tuning, one optimizer step each.

    .venv/bin/python benchmarks/step.py [--device cpu|cuda] [--batch N] [--iters N] [--warmup N]
                                        [--models vit_tiny_test vit_small_patch16] [--peak-tflops 989]
                                        [--compile]

A step is forward + backward + AdamW step on random images (the data path is benchmarks/loader.py's job):
pre-training = MAE loss with the paper's decoder (docs/paper.md: ViT-S 512-dim, 2 blocks), fine-tuning = the
ViT classifier (14 outputs, BCE, DropPath 0.2, LLRD groups). On CUDA the forward runs under bf16 autocast.
Model FLOPs per image (forward + backward) are counted once with torch.utils.flop_counter.FlopCounterMode
under the math attention kernel (so attention matmuls are counted on every device); on a GPU the table
adds achieved TFLOP/s and the percentage of --peak-tflops (989 = H100 SXM dense bf16).
"""
from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from rich import box
from rich.console import Console
from rich.table import Table
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from thoraxmae.trainers.config import ModelConfig
from thoraxmae.trainers.models import build_classifier, build_mae, resolve_model
from thoraxmae.trainers.optim import param_groups

MODELS = {
    "vit_tiny_test": ModelConfig(name="vit_tiny_test", img_size=64, patch_size=8, decoder_embed_dim=32,
                                 decoder_depth=1, decoder_num_heads=2),
    "vit_small_patch16": ModelConfig(name="vit_small_patch16"),
}
CASES = (("pretrain", 0.75), ("pretrain", 0.9), ("finetune", None))
NUM_CLASSES = 14


def make_case(cfg: ModelConfig, phase: str, mask_ratio: float | None, batch: int, device: torch.device
              ) -> tuple[torch.nn.Module, Callable[[], torch.Tensor]]:
    """The model and a closure computing the loss on one fixed random batch."""
    size = resolve_model(cfg).img_size  # the preset's unless given
    imgs = torch.randn(batch, cfg.in_chans, size, size, device=device)  # [B, C, H, W]
    if phase == "pretrain":
        model = build_mae(cfg, norm_pix_loss=False).to(device)
        return model, lambda: model(imgs, mask_ratio)[0]
    model = build_classifier(cfg, NUM_CLASSES, drop_path=0.2).to(device)
    labels = (torch.rand(batch, NUM_CLASSES, device=device) < 0.1).float()  # [B, K]
    return model, lambda: F.binary_cross_entropy_with_logits(model(imgs).float(), labels)


def count_flops(loss_fn: Callable[[], torch.Tensor], autocast: contextlib.AbstractContextManager) -> int:
    """FLOPs of one forward + backward (math attention kernel, so attention is counted everywhere)."""
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        with autocast:
            loss = loss_fn()
        loss.backward()
    return counter.get_total_flops()


def time_steps(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], phase: str, iters: int,
               warmup: int,
               autocast_factory: Callable[[], contextlib.AbstractContextManager],
               device: torch.device) -> float:
    """Seconds per optimizer step, averaged over `iters` steps after `warmup` untimed ones."""
    groups = param_groups(model, weight_decay=0.05, layer_decay=0.55 if phase == "finetune" else None)
    betas = (0.9, 0.95) if phase == "pretrain" else (0.9, 0.999)  # docs/paper.md
    opt = torch.optim.AdamW(groups, lr=1e-4, betas=betas)
    for i in range(warmup + iters):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with autocast_factory():
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def run(args: argparse.Namespace) -> Table:
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (256 if cuda else 8)
    iters = args.iters or (20 if cuda else 5)
    warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True

    def autocast_factory() -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    title = (f"step = forward + backward + AdamW, batch {batch}, {iters} timed steps, {device.type}"
             f"{' (bf16 autocast)' if cuda else f' ({torch.get_num_threads()} threads, fp32)'}")
    table = Table(title=title, box=box.SIMPLE)
    for col in ("model", "px", "phase", "mask", "GFLOP/img", "ms/step", "img/s",
                "TFLOP/s" if cuda else "GFLOP/s", *(["% peak", "max mem GiB"] if cuda else [])):
        table.add_column(col, justify="left" if col in ("model", "phase") else "right", no_wrap=True)
    for name in args.models:
        cfg = MODELS[name]
        for phase, mask_ratio in CASES:
            torch.manual_seed(0)
            model, loss_fn = make_case(cfg, phase, mask_ratio, batch, device)
            flops_per_img = count_flops(loss_fn, autocast_factory()) / batch
            model.zero_grad(set_to_none=True)
            if args.compile:
                model.compile()
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            seconds = time_steps(model, loss_fn, phase, iters, warmup, autocast_factory, device)
            img_s = batch / seconds
            achieved = flops_per_img * img_s
            row = [name, str(resolve_model(cfg).img_size), phase, f"{mask_ratio:.2f}" if mask_ratio else "-",
                   f"{flops_per_img / 1e9:.2f}", f"{seconds * 1e3:.1f}", f"{img_s:.1f}"]
            if cuda:
                row += [f"{achieved / 1e12:.1f}", f"{100 * achieved / 1e12 / args.peak_tflops:.1f}",
                        f"{torch.cuda.max_memory_allocated() / 2**30:.1f}"]
            else:
                row.append(f"{achieved / 1e9:.1f}")
            table.add_row(*row)
            del model, loss_fn
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="images per step (default 8 on CPU, 256 on "
                                                                "CUDA)")
    parser.add_argument("--iters", type=int, default=None, help="timed steps (default 5 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 CPU, 5 "
                                                                 "CUDA)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="device peak for the %% column")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model before timing")
    Console(width=160).print(run(parser.parse_args()))


if __name__ == "__main__":
    main()

"""What pre-training reuse saves: the same small pipeline study with reuse on and off, side by side.

    .venv/bin/python benchmarks/study_cost.py [--trials 10] [--pretrain-epochs 3] [--n 600]
    .venv/bin/python benchmarks/study_cost.py --tournament    # last: tournament: pretrain_epochs=... ratio=
    .venv/bin/python benchmarks/study_cost.py --paper [SPEC]  # last: paper-scale: <x> x one 800-epoch ...

Both runs use the demo's recipe space (4 pre-training recipes: mask 0.75/0.9 x crop 0.2/0.5, each covered
by 2 trials, then TPE), the same seeded sampler and the same phantom store, on one local Ray with 2 CPUs
and 2 trials at a time; only `search.reuse_pretraining` differs. Printed per run: pre-training epochs run
(from MLflow: the pretrain runs' `pretrain/loss` steps with reuse, the trials' without), pre-training
Train runs, the study's wall time; then the ratios (off / on). ASHA is off so both runs fine-tune the same
epochs and the difference is pre-training alone.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient


def phantom_store(root: Path, n: int) -> Path:
    from thoraxmae.datasets.phantom import generate_phantom
    from thoraxmae.datasets.sources import load_source
    from thoraxmae.datasets.store import prepare_store

    generate_phantom(root / "nih", n=n, size=64, seed=0)
    prepare_store(load_source("nih", root / "nih", split_seed=0), root / "store", size=64, workers=1)
    return root / "store"


def study(name: str, store: Path, root: Path, trials: int, pretrain_epochs: int, reuse: bool):
    from thoraxmae.study.spec.load import parse_spec

    return parse_spec({
        "name": name, "stage": "pipeline", "data": {"store": str(store)},
        "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8, "depth": 2,
                  "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2},
        "pretrain": {"epochs": pretrain_epochs, "warmup_epochs": 1, "batch_size": 32,
                     "max_steps_per_epoch": 10},
        "finetune": {"epochs": 2, "warmup_epochs": 1, "batch_size": 32, "max_steps_per_epoch": 10,
                     "bootstrap": 0},
        "search": {"num_samples": trials, "coverage": 2, "reuse_pretraining": reuse,
                   "sampler": {"type": "tpe", "seed": 0, "n_startup_trials": 3},
                   "scheduler": {"type": "none"},
                   "space": {"pretrain.mask_ratio": {"type": "categorical", "choices": [0.75, 0.9]},
                             "pretrain.crop_min": {"type": "categorical", "choices": [0.2, 0.5]},
                             "finetune.layer_decay": {"type": "float", "low": 0.4, "high": 0.9}}},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 2},
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}"},
        "storage_path": str(root / f"studies-{name}")})


def pretrain_epochs_run(uri: str, experiment: str, reuse: bool) -> tuple[int, int]:
    """(pre-training epochs run, pre-training runs) as MLflow recorded them."""
    from thoraxmae.study import schema

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    role = schema.ROLE_PRETRAIN if reuse else schema.ROLE_TRIAL
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{schema.TAG_ROLE}` = '{role}'")
    epochs = [len(client.get_metric_history(r.info.run_id, schema.M_PRETRAIN_LOSS)) for r in runs]
    return sum(epochs), sum(1 for e in epochs if e)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--pretrain-epochs", type=int, default=3)
    ap.add_argument("--n", type=int, default=600, help="phantom images")
    ap.add_argument("--tournament", action="store_true", help="a 4-recipe tournament (rungs 1/2/4) vs every "
                                                              "recipe "
                    "pre-trained to 4 epochs, on the phantom (benchmarks/tournament_cost.py)")
    ap.add_argument("--paper", nargs="?",
                    const=str(Path(__file__).parents[1] / "configs/paper-tournament-study.yaml"),
                    help="paper-scale cost of a tournament spec in FLOPs (no run)")
    args = ap.parse_args()
    if args.paper or args.tournament:
        import tournament_cost

        if args.paper:
            tournament_cost.paper_main(Path(args.paper))
            return

    from thoraxmae.study.run.ray_local import init_ray
    from thoraxmae.study.run.tune import run_study

    with tempfile.TemporaryDirectory(prefix="study-cost-") as tmp:
        root = Path(tmp)
        store = phantom_store(root, args.n)
        init_ray(num_cpus=2, object_store_memory=200 * 1024**2)
        if args.tournament:
            tournament_cost.tournament_main(root, store, [1, 2, 4])
            return
        rows = {}
        for reuse in (True, False):
            name = "reuse-on" if reuse else "reuse-off"
            spec = study(name, store, root, args.trials, args.pretrain_epochs, reuse)
            t0 = time.monotonic()
            grid = run_study(spec)
            wall = time.monotonic() - t0
            epochs, runs = pretrain_epochs_run(spec.tracking.uri, name, reuse)
            rows[name] = (epochs, runs, wall, len(grid) - len(grid.errors))
        print(f"\n{args.trials}-trial pipeline study, 4 pre-training recipes, {args.pretrain_epochs} "
              "pre-training epochs each, 2 trials at a time (2 CPUs)")
        print(f"{'':10} {'pretrain epochs':>16} {'pretrain runs':>14} {'wall s':>8} {'trials ok':>10}")
        for name, (epochs, runs, wall, ok) in rows.items():
            print(f"{name:10} {epochs:16d} {runs:14d} {wall:8.1f} {ok:10d}")
        on, off = rows["reuse-on"], rows["reuse-off"]
        print(f"ratio off/on: pre-training epochs {off[0] / max(on[0], 1):.2f}x, wall time "
              f"{off[2] / on[2]:.2f}x")


if __name__ == "__main__":
    main()

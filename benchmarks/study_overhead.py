"""Per-trial start-up overhead of a study: what a trial costs beyond its training epochs.

    .venv/bin/python benchmarks/study_overhead.py [--trials 3] [--store PATH]

Measures, on a local Ray (2 CPUs): `ray.init`; a bare Tune function trial (report once, no Train);
and real study trials (our Tune function driver -> TorchTrainer with 1 worker, 1 epoch of 1 step on a
phantom store), where overhead = the trial's wall time (Tune `time_total_s`) - its reported epoch time.
Trials run one at a time so the figures are not queueing.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def phantom_store(root: Path) -> Path:
    from thoraxmae.datasets.phantom import generate_phantom
    from thoraxmae.datasets.sources import load_source
    from thoraxmae.datasets.store import prepare_store

    generate_phantom(root / "nih", n=240, size=64, seed=0)
    prepare_store(load_source("nih", root / "nih"), root / "store", size=64, workers=1, progress=False)
    return root / "store"


def bare_trials(n: int, storage: Path) -> float:
    """Wall seconds per trial of a Tuner whose trials only report once (Tune's own cost)."""
    import ray.tune

    def trainable(config):
        ray.tune.report({"x": 1.0})

    t0 = time.monotonic()
    ray.tune.Tuner(trainable, tune_config=ray.tune.TuneConfig(num_samples=n, max_concurrent_trials=1),
                   run_config=ray.tune.RunConfig(storage_path=str(storage), name="bare", verbose=0)).fit()
    return (time.monotonic() - t0) / n


def study_trials(n: int, store: Path, root: Path) -> tuple[float, list[tuple[float, float]]]:
    """(wall seconds per trial of the whole study, [(trial time_total_s, its epoch seconds)])."""
    from thoraxmae.study.run.tune import run_study
    from thoraxmae.study.spec.load import parse_spec

    spec = parse_spec({
        "name": "overhead", "stage": "finetune", "data": {"store": str(store)},
        "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8, "depth": 2},
        "finetune": {"epochs": 1, "warmup_epochs": 0, "batch_size": 16, "max_steps_per_epoch": 1,
                     "bootstrap": 0},
        "search": {"num_samples": n, "scheduler": {"type": "none"},
                   "space": {"finetune.layer_decay": {"type": "float", "low": 0.5, "high": 0.9}}},
        "resources": {"workers_per_trial": 1, "cpus_per_worker": 1, "max_concurrent_trials": 1},
        "tracking": {"uri": f"sqlite:///{root / 'mlflow.db'}"}, "storage_path": str(root / "studies")})
    t0 = time.monotonic()
    grid = run_study(spec)
    wall = (time.monotonic() - t0) / n
    return wall, [(r.metrics["time_total_s"], r.metrics["time/epoch_s"]) for r in grid]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--store", type=Path, default=None, help="a prepared store (default: a fresh "
                                                                 "phantom)")
    args = parser.parse_args()
    import ray

    from thoraxmae.study.run.ray_local import init_ray

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = args.store or phantom_store(root)
        t0 = time.monotonic()
        init_ray(num_cpus=2)
        print(f"ray.init (local, dashboard on): {time.monotonic() - t0:.1f} s")
        bare = bare_trials(args.trials, root / "tune")
        print(f"bare Tune function trial: {bare:.2f} s of study wall time per trial ({args.trials} trials)")
        wall, real = study_trials(args.trials, store, root)
        overhead = [total - epoch for total, epoch in real]
        print("study trial (Tune driver + TorchTrainer, 1 worker): median wall "
              f"{statistics.median(t for t, _ in real):.1f} s, median overhead beyond the epoch "
              f"{statistics.median(overhead):.1f} s (min {min(overhead):.1f}, max {max(overhead):.1f}) over "
              f"{len(real)}; {wall:.1f} s of study wall time per trial (with MLflow logging)")
        ray.shutdown()


if __name__ == "__main__":
    main()

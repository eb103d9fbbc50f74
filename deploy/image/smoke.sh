#!/usr/bin/env bash
# The smoke study of an installed thoraxmae (tests/packaging, `make image-check`, and a new image):
# phantom data -> store -> a one-trial pipeline study of the demo spec the package ships, on a local Ray
# and a local MLflow (SQLite). Usage: smoke.sh CONFIGS_DIR OUT_DIR   (thoraxmae on PATH)
set -euo pipefail
configs=${1:?usage: smoke.sh CONFIGS_DIR OUT_DIR}
out=${2:?usage: smoke.sh CONFIGS_DIR OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
start=$(date +%s)
thoraxmae --help >/dev/null
thoraxmae data phantom "$out/phantom" --n 120 --size 64 --seed 0
thoraxmae data prepare "$out/phantom" --format nih --out "$out/store" --size 64 --workers 1
thoraxmae study run "$configs/demo.yaml" \
  --set name=smoke --set data.store="$out/store" --set storage_path="$out/studies" \
  --set tracking.uri="sqlite:///$out/mlflow.db" --set confirm=null \
  --set search.num_samples=1 --set search.coverage=0 --set resources.max_concurrent_trials=1 \
  --set pretrain.epochs=1 --set pretrain.warmup_epochs=0 --set pretrain.max_steps_per_epoch=2 \
  --set finetune.epochs=1 --set finetune.warmup_epochs=0 --set finetune.max_steps_per_epoch=2 \
  --set finetune.bootstrap=20
thoraxmae study status smoke --tracking-uri "sqlite:///$out/mlflow.db"
echo "smoke study finished in $(( $(date +%s) - start )) s"

"""`thoraxmae evaluate CHECKPOINT --store STORE [--split test] [--tracking-uri URI]`.

Evaluates a fine-tuned checkpoint (ours, the paper's released file, or a timm state dict) on one split
of a prepared store, prints per-class AUC with the mean AUC and its 95% CI (patient-level bootstrap when
the store has patient ids; accuracy for multi-class stores) and logs one MLflow run (role `evaluation`).
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

EXPERIMENT = "evaluations"
LOAD_REPORT_ARTIFACT = "load_report.json"


def register(sub: argparse._SubParsersAction) -> None:
    from thoraxmae.datasets.config import path_or_uri

    q = sub.add_parser("evaluate", help="evaluate a fine-tuned checkpoint on a store split (AUC table, 95%% "
                                        "CI)",
                       description=__doc__.split("\n\n")[1])
    q.add_argument("checkpoint", type=path_or_uri,
                   help="fine-tuned weights: best_model.pt, a released .pth, a timm file (a path or s3://, "
                        "gs://)")
    q.add_argument("--store", type=path_or_uri, required=True,
                   help="prepared store (thoraxmae data prepare): a folder or an object-store URI")
    q.add_argument("--split", default="test", help="store split to evaluate (default: test)")
    q.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db")
    q.add_argument("--experiment", default=EXPERIMENT, help=f"MLflow experiment (default: {EXPERIMENT})")
    q.add_argument("--batch-size", type=_at_least(1), default=64, metavar="N")
    q.add_argument("--bootstrap", type=_at_least(0), default=1000, metavar="N",
                   help="bootstrap resamples for the 95%% CIs (0: none)")
    q.add_argument("--device", type=_device, default="cpu", help="torch device, e.g. cuda (default: cpu)")
    q.add_argument("--workers", type=_at_least(0), default=0, metavar="N", help="DataLoader worker processes")
    q.add_argument("--norm-stats", default="auto", choices=("auto", "nih", "imagenet"),
                   help="input statistics: auto (default) = what the checkpoint declares, NIH when it "
                        "declares none; nih or imagenet to override")
    q.set_defaults(func=cmd_evaluate)
    q.error = _one_line(q)  # type: ignore[method-assign]


def _one_line(parser: argparse.ArgumentParser):
    """A bad option is one `error:` line and exit 2, like every other refusal (not argparse's usage block)."""
    def error(message: str):
        parser.exit(2, f"error: {parser.prog}: {message} (see `{parser.prog} --help`)\n")
    return error


def _at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
        return value
    return parse


def _device(text: str) -> str:
    """The device, when this machine has it (trainers.evaluate.check_options): `--device cuda` without CUDA
    stops here, before any file is read."""
    from thoraxmae.trainers.evaluate import check_options

    try:
        check_options(1, 0, 0, text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"device={text!r}: ")) from None
    return text


def cmd_evaluate(args: argparse.Namespace) -> int:
    from thoraxmae.datasets.store_read import open_store
    from thoraxmae.study.tracking.uri import check_tracking_uri, default_tracking_uri
    from thoraxmae.trainers.checkpoint_files import check_checkpoint
    from thoraxmae.trainers.evaluate import evaluate_checkpoint

    uri = args.tracking_uri or default_tracking_uri()
    check_tracking_uri(uri, write=True)
    fmt = check_checkpoint(args.checkpoint)  # before any work: a bad file is one line
    store = open_store(args.store)
    print(f"evaluating {args.checkpoint} ({fmt}) on {store.source or store.path} split {args.split}")
    ev = evaluate_checkpoint(args.checkpoint, args.store, args.split, batch_size=args.batch_size,
                             bootstrap=args.bootstrap, device=args.device, num_workers=args.workers,
                             norm_stats=args.norm_stats, progress=_progress())
    for line in ev.load.lines():
        print(f"  {line}")
    mean, std = ev.normalization
    print(f"  inputs normalised with mean {mean}, std {std}")
    print_table(ev)
    run_id = log_evaluation(ev, uri, args.experiment)
    print(f"MLflow run {run_id} (experiment {args.experiment}, {uri})")
    return 0


def _progress():
    step = {"next": 0.0}

    def report(done: int, total: int) -> None:
        if done >= total or done / total >= step["next"]:
            print(f"  {done}/{total} images", flush=True)
            step["next"] = done / total + 0.25
    return report


def print_table(ev) -> None:
    from rich.console import Console
    from rich.table import Table

    split = ev.split
    table = Table(title=f"{split}: {len(ev.labels)} images, {ev.ci.n_units} {ev.ci.unit}s")
    for col in ("label", "positives", "AUC", "95% CI"):
        table.add_column(col, justify="left" if col == "label" else "right")
    positives = (ev.labels * ev.mask).sum(0)
    for name, pos, auc, (lo, hi) in zip(ev.label_names, positives, ev.per_class_auc, ev.ci.per_class,
                                        strict=True):
        table.add_row(name, f"{int(pos)}", _num(auc), f"{_num(lo)}-{_num(hi)}")
    table.add_row("mean AUC", "", _num(ev.mauc), f"{_num(ev.ci.mauc[0])}-{_num(ev.ci.mauc[1])}", style="bold")
    if ev.accuracy is not None:
        table.add_row("accuracy", "", _num(ev.accuracy), f"{_num(ev.ci.acc[0])}-{_num(ev.ci.acc[1])}",
                      style="bold")
    Console().print(table)
    print(f"95% CIs: {ev.ci.n_boot} bootstrap resamples of {ev.ci.unit}s")


def _num(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else "-"


def log_evaluation(ev, uri: str, experiment: str) -> str:
    """One MLflow run: tags (role evaluation, the CI unit), params (checkpoint, format, store, split, model),
    metrics `<split>/mauc`, `<split>/auc/<label>`, intervals; per_class_auc.csv and the load report."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from thoraxmae.study import schema
    from thoraxmae.study.tracking.writer import ensure_experiment

    client = MlflowClient(uri)
    tags = {schema.TAG_ROLE: schema.ROLE_EVALUATION, f"{ev.split}/ci_unit": ev.ci.unit}
    run = client.create_run(ensure_experiment(client, uri, experiment), tags=tags,
                            run_name=f"evaluate-{Path(str(ev.checkpoint)).stem}-{ev.split}")
    run_id = run.info.run_id
    mean, std = ev.normalization
    params = {"checkpoint": _shown(ev.checkpoint), "checkpoint.format": ev.format,
              "store": _shown(ev.store), "split": ev.split, "bootstrap": ev.ci.n_boot,
              "normalization.mean": mean, "normalization.std": std,
              **{f"model.{k}": v for k, v in ev.model.model_dump().items() if v is not None}}
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in ev.metrics(f"{ev.split}/").items()]
    client.log_batch(run_id, metrics=metrics[:1000], params=[Param(k, str(v)) for k, v in params.items()])
    rows = ["label,auc,ci_low,ci_high"] + [
        f"{n},{a:.6f},{lo:.6f},{hi:.6f}" for n, a, (lo, hi) in zip(ev.label_names, ev.per_class_auc,
                                                                   ev.ci.per_class,
                                                                   strict=True)]
    client.log_text(run_id, "\n".join(rows) + "\n", schema.ARTIFACT_AUC_TABLE)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / LOAD_REPORT_ARTIFACT
        path.write_text(json.dumps(ev.load.as_dict(), indent=1))
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _shown(where: Path | str) -> str:
    """An object-store URI as given; a local path resolved."""
    return where if isinstance(where, str) else str(where.resolve())

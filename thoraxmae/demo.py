"""`thoraxmae demo`: the whole product on the embedded default, on one machine with no data and no GPU.

phantom ChestX-ray14 (real NIH layout) -> prepared store -> the recipe tournament of
configs/demo-tournament.yaml (4 pre-training recipes, rungs of 1 and 2 epochs, paired scoring fine-tunes;
`--spec configs/demo.yaml`: the pipeline search with TPE + ASHA) on a local Ray, tracked in a local MLflow
(SQLite) -> recipe report. Everything lives under --out (default ./demo-out). A re-run
reuses the phantom and the store and runs the study again under the next free name (demo-2, ...).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# The specs the wheel ships (thoraxmae/configs/), or a checkout's configs/ (an editable install). A copy
# of the package without either (a `study submit` job's copy) imports fine; only `demo` needs them.
_CONFIG_DIRS = (Path(__file__).resolve().parent / "configs", Path(__file__).resolve().parents[1] / "configs")
CONFIGS = next((p for p in _CONFIG_DIRS if p.is_dir()), _CONFIG_DIRS[0])
DEMO_SPEC = CONFIGS / "demo.yaml"  # the pipeline search: `thoraxmae demo --spec .../demo.yaml`
TOURNAMENT_SPEC = CONFIGS / "demo-tournament.yaml"  # what `thoraxmae demo` runs: the recipe tournament
PHANTOM_MARKER = ".thoraxmae-phantom.json"


def register(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("demo", help="phantom data -> store -> pipeline study -> recipe report, on this "
                                    "machine")
    q.add_argument("--out", type=Path, default=Path("demo-out"), help="folder for everything (default "
                                                                      "./demo-out)")
    q.add_argument("--n", type=int, default=1200, help="phantom images (default 1200)")
    q.add_argument("--trials", type=int, default=None, help="trials (default: the demo spec's num_samples)")
    q.add_argument("--spec", type=Path, default=TOURNAMENT_SPEC,
                   help=f"study spec (default {TOURNAMENT_SPEC.name}, a recipe tournament; {DEMO_SPEC.name}: "
                        "the pipeline search with TPE + ASHA and a confirmation)")
    q.add_argument("--confirm-seeds", type=int, default=None, metavar="N",
                   help="seeds of the confirmation of the best recipe vs the paper's (default: the spec's; "
                        "0: none)")
    q.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from thoraxmae.study.tracking.uri import mlflow_cli_defaults

    mlflow_cli_defaults()
    console = Console()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    console.rule("[bold]thoraxmae demo")
    phantom = ensure_phantom(out / "phantom", args.n, console)
    store = ensure_store(phantom, out / "store", console)
    spec = demo_spec(args.spec, out, store, args.trials, args.confirm_seeds)
    from thoraxmae.study.spec.coverage import combinations

    t = spec.search.tournament
    if t is not None:
        console.print(f"[bold][3/4][/] recipe tournament [bold]{spec.name}[/]: {len(combinations(spec))} "
                      f"pre-training recipes, rungs {t.rungs} pre-training epochs (constant LR, survivors "
                      f"continue), each recipe scored by {t.scoring.trials} paired fine-tunes per rung, top "
                      f"{t.keep:.0%} kept")
    else:
        console.print(f"[bold][3/4][/] study [bold]{spec.name}[/]: {spec.search.num_samples} pipeline "
                      f"trials, TPE + ASHA, {spec.resources.max_concurrent_trials} at a time; each "
                      f"pre-training recipe pre-trained once and covered by {spec.search.coverage} "
                      "fine-tuning trials first"
                      + (f"; then the best recipe and the paper's re-run with {spec.confirm.seeds} seeds each"
                         if spec.confirm else ""))
    from thoraxmae.cli.study import _run

    code = _run(spec, resume=False)
    if code:
        return code
    console.print(f"[bold][4/4][/] recipe report of {spec.name}")
    report = make_report(spec.name, spec.tracking.uri, out / "report" / spec.name, console)
    minutes = (time.monotonic() - t0) / 60
    console.rule(f"demo finished in {minutes:.1f} min")
    uri = spec.tracking.uri
    print(f"phantom data   {phantom}\nstore          {store}\nTune storage   {spec.storage_path}\n"
          f"MLflow         {uri}\nreport         {report}\n\nnext:")
    print(f"  thoraxmae ui --tracking-uri {uri}    # MLflow UI on http://127.0.0.1:5000")
    print(f"  thoraxmae study status {spec.name} --tracking-uri {uri}")
    print(f"  thoraxmae report {spec.name} --tracking-uri {uri} --out report/")
    return 0


def ensure_phantom(folder: Path, n: int, console) -> Path:
    """The phantom NIH folder, generated unless a finished one with the same n is there."""
    from rich.progress import Progress

    from thoraxmae.datasets.phantom import generate_phantom

    marker = folder / PHANTOM_MARKER
    want = {"n": n, "size": 128, "seed": 0}
    if marker.is_file() and json.loads(marker.read_text()) == want:
        console.print(f"[bold][1/4][/] phantom ChestX-ray14 ({n} images) reused from {folder}")
        return folder
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"[1/4] phantom ChestX-ray14, {n} images", total=n)
        generate_phantom(folder, n=n, size=want["size"], seed=want["seed"],
                         progress=lambda k: bar.advance(task, k))
    marker.write_text(json.dumps(want))
    console.print(f"[bold][1/4][/] phantom ChestX-ray14 ({n} images, NIH layout) written to {folder}")
    return folder


def ensure_store(phantom: Path, store: Path, console) -> Path:
    """The 64 px store of the phantom, read through the real NIH source (finished shards are reused)."""
    from thoraxmae.datasets.cli import progress_bar
    from thoraxmae.datasets.sources import load_source
    from thoraxmae.datasets.store import prepare_store

    table = load_source("nih", phantom, split_seed=0)
    with progress_bar("[2/4] store", len(table)) as bar:
        manifest = prepare_store(table, store, size=64, workers=2, progress=bar)
    counts = ", ".join(f"{k} {v}" for k, v in manifest.get("counts", {}).items())
    console.print(f"[bold][2/4][/] store {store} ({manifest['images']} "
                  f"images{'; ' + counts if counts else ''})")
    return store


def demo_spec(path: Path, out: Path, store: Path, trials: int | None, confirm_seeds: int | None = None):
    """The demo spec with this run's store, MLflow file, Tune folder and the next free study name. Fewer
    trials than the spec's coverage needs lower the coverage to what they allow (0 below one per recipe)."""
    from thoraxmae.study.spec.coverage import combinations
    from thoraxmae.study.spec.load import load_spec
    from thoraxmae.study.tracking.lookup import check_tracking_uri, name_taken

    uri = f"sqlite:///{out / 'mlflow.db'}"
    overrides = [f"data.store={store}", f"tracking.uri={uri}", f"storage_path={out / 'studies'}"]
    if confirm_seeds is not None:
        overrides.append("confirm=null" if confirm_seeds == 0 else f"confirm.seeds={confirm_seeds}")
    if trials is not None:
        base = load_spec(path, overrides)
        recipes = max(1, len(combinations(base)))
        overrides += [f"search.num_samples={trials}",
                      f"search.coverage={min(base.search.coverage, trials // recipes)}"]
    spec = load_spec(path, overrides)
    check_tracking_uri(uri, write=True)
    base, k = spec.name, 1
    while name_taken(spec):  # a study of that name in MLflow or a Tune folder of that name
        k += 1
        spec = load_spec(path, [*overrides, f"name={base}-{k}"])
    return spec


def make_report(name: str, uri: str, out: Path, console) -> Path:
    import os

    from thoraxmae.analysis.report import build_report

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    result = build_report(name, uri, out)
    from thoraxmae.analysis.claims import summary_lines

    for line in summary_lines(result.analysis):
        console.print(f"  {line}", markup=False)
    return result.html

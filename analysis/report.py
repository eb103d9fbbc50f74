"""`build_report`: MLflow -> tables -> figures -> report.html, report.md, recipe.yaml, trials.parquet.

The report folder is also logged as an artifact of the study's parent run (`report/`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from thoraxmae.analysis.analyze import AnalysisOptions, StudyAnalysis, analyze
from thoraxmae.analysis.load import Progress, load_study
from thoraxmae.analysis.plots import draw_all
from thoraxmae.analysis.render import render_html, render_markdown
from thoraxmae.analysis.sections import build_sections
from thoraxmae.study import schema

log = logging.getLogger(__name__)
STAGE_COMMANDS = {"pretrain": "thoraxmae pretrain recipe.yaml", "finetune": "thoraxmae finetune recipe.yaml",
                  "pipeline": "thoraxmae pretrain recipe.yaml, then fine-tune from its checkpoint "
                              "(stage: finetune, finetune.init: <checkpoint>)"}


@dataclass
class ReportResult:
    study: str
    tracking_uri: str
    out_dir: Path
    html: Path
    markdown: Path
    recipe_yaml: Path | None  # None when no trial is scored (no recipe)
    trials_parquet: Path
    curves_parquet: Path
    figures: dict[str, Path]
    analysis: StudyAnalysis
    logged_to_run: str | None = None  # the parent run holding the `report/` artifact (None: not logged)
    files: list[Path] = field(default_factory=list)


def build_report(study_name: str, tracking_uri: str | None = None, out_dir: Path | str = "report", *,
                 n_bootstrap: int = 40, top_fraction: float = 0.2, min_k: int = 3,
                 reference: dict[str, Any] | None = None, reference_name: str | None = None, seed: int = 0,
                 log_artifacts: bool = True, progress: Progress | None = None) -> ReportResult:
    """Read study `study_name` from MLflow and write its recipe report into `out_dir`.

    `n_bootstrap` resamples check the importance ranking (0: not checked); `reference` (default: the
    paper's recipe, study.schema.PAPER_RECIPE) is what the recipe's knobs are compared with. Raises
    analysis.ReportError for a missing study or one without trial runs, naming the study and the
    tracking URI; a study whose trials all failed still gets a report (saying why there is no recipe).
    """
    study = load_study(study_name, tracking_uri, progress)
    options = AnalysisOptions(n_bootstrap=n_bootstrap, top_fraction=top_fraction, min_k=min_k, reference=reference,
                              seed=seed)
    if reference_name:
        options.reference_name = reference_name
    elif reference is not None:
        options.reference_name = "the given reference"
    a = analyze(study, options)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = draw_all(a, out)
    recipe_text = recipe_yaml_text(a) if a.recipe is not None else ""
    sections = build_sections(a, figures, recipe_text)
    title = f"Recipe report: study {study.name}"
    subtitle = (f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `thoraxmae report` from "
                f"`{study.tracking_uri}`; objective `{study.metric}` ({study.mode}); top-k = best "
                f"{top_fraction:.0%} of the completed trials (at least {min_k}); {n_bootstrap} bootstrap resamples.")
    paths = {"html": out / "report.html", "md": out / "report.md", "recipe": out / "recipe.yaml",
             "trials": out / "trials.parquet", "curves": out / "curves.parquet"}
    paths["html"].write_text(render_html(title, subtitle, sections), encoding="utf-8")
    paths["md"].write_text(render_markdown(title, subtitle, sections), encoding="utf-8")
    if a.recipe is not None:
        paths["recipe"].write_text(recipe_text, encoding="utf-8")
    else:  # a stale recipe from an earlier report would contradict this one
        paths.pop("recipe").unlink(missing_ok=True)
    a.trials.to_parquet(paths["trials"], index=False)
    a.curves.to_parquet(paths["curves"], index=False)
    result = ReportResult(study.name, study.tracking_uri, out, paths["html"], paths["md"], paths.get("recipe"),
                          paths["trials"], paths["curves"], figures, a,
                          files=sorted([*paths.values(), *figures.values()]))
    if log_artifacts:
        result.logged_to_run = _log_report(study.tracking_uri, study.parent_run_id, result.files)
    return result


def recipe_yaml_text(a: StudyAnalysis) -> str:
    """recipe.yaml: a comment header (provenance, how to run it) and the spec with the knobs fixed."""
    r, s = a.recipe, a.study
    label = ("# Exploratory: no confirmation runs; search scores only, one seed per trial." if a.confirmation is None
             else "# The search's top-k median; the report's Recipe section holds the confirmed recipes' verdicts.")
    lines = [f"# Recipe distilled from study `{s.name}` by `thoraxmae report` ({time.strftime('%Y-%m-%d')}).",
             (f"# Searched knobs fixed to the median of the top {r.confidence.k} of {r.confidence.n_pool} "
             f"{r.confidence.pool} trials ({s.metric}, {s.mode});"),
             f"# best trial {r.best.trial_id}: {s.metric} = {r.best.objective:.4f}. The search section is removed.",
             label, f"# Run it: {STAGE_COMMANDS.get(s.stage, 'thoraxmae finetune recipe.yaml')}"]
    if s.spec is None:
        lines.append("# The study's spec.yaml artifact was not found: only the recommended knobs are listed.")
    return "\n".join(lines) + "\n" + yaml.safe_dump(a.recipe_spec, sort_keys=False)


def _log_report(uri: str, parent_run_id: str | None, files: list[Path]) -> str | None:
    """Copy the report's own files (not whatever else the folder holds) to the parent run's `report/`."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if parent_run_id is None:
        log.warning("study has no parent run; the report is not logged to MLflow")
        return None
    client = MlflowClient(tracking_uri=uri)
    try:
        for path in files:
            client.log_artifact(parent_run_id, str(path), schema.ARTIFACT_REPORT_DIR)
    except (MlflowException, OSError) as exc:  # the files on disk are the result; logging is a copy
        log.warning("report written to %s but not logged to run %s: %s", files[0].parent, parent_run_id, exc)
        return None
    return parent_run_id

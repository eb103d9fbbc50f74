"""`build_report`: MLflow -> tables -> figures -> report.html, report.md, recipe.yaml, trials.parquet.

The report folder is also logged as an artifact of the study's parent run (`report/`).
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from thoraxmae.analysis.analyze import AnalysisOptions, StudyAnalysis, analyze
from thoraxmae.analysis.errors import ReportError
from thoraxmae.analysis.load import Progress, load_study
from thoraxmae.analysis.plots import draw_all
from thoraxmae.analysis.render import render_html, render_markdown
from thoraxmae.analysis.sections import build_sections
from thoraxmae.analysis.tournament_section import draw_bracket, tournament_sections
from thoraxmae.datasets.errors import DataError
from thoraxmae.datasets.output import output_folder, reason, remove_if_empty
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
    if isinstance(top_fraction, bool) or not 0 < top_fraction <= 1:
        raise ReportError(f"top_fraction={top_fraction!r}: expected a share of the completed trials in (0, "
                          "1]")
    created = not Path(out_dir).exists()
    out = _output_folder(Path(out_dir))  # before MLflow is read
    try:
        study = load_study(study_name, tracking_uri, progress)
        options = AnalysisOptions(n_bootstrap=n_bootstrap, top_fraction=top_fraction, min_k=min_k,
                                  reference=reference, seed=seed)
        if reference_name:
            options.reference_name = reference_name
        elif reference is not None:
            options.reference_name = "the given reference"
        a = analyze(study, options)
        figures, paths = _write(a, out, top_fraction, min_k, n_bootstrap)
    except BaseException:
        if created:
            remove_if_empty(out)
        raise
    result = ReportResult(study.name, study.tracking_uri, out, paths["html"], paths["md"],
                          paths.get("recipe"),
                          paths["trials"], paths["curves"], figures, a,
                          files=sorted([*paths.values(), *figures.values()]))
    if log_artifacts:
        result.logged_to_run = _log_report(study.tracking_uri, study.parent_run_id, result.files)
    return result


def _output_folder(out: Path) -> Path:
    try:
        return output_folder(out, "report folder (--out)")
    except DataError as exc:
        raise ReportError(str(exc)) from None


def _write(a: StudyAnalysis, out: Path, top_fraction: float, min_k: int,
           n_bootstrap: int) -> tuple[dict[str, Path], dict[str, Path]]:
    """Figures, report.html/.md, recipe.yaml and the parquet tables, written into a staging folder inside
    `out` and moved into place only when all were written: a failed write (a full disk) leaves `out` as it
    was, with no partial file. Returns (figures, paths) as they lie in `out`."""
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        figures = draw_all(a, staging)
        # a recipe tournament's bracket (analysis/tournament_section.py)
        figures.update(draw_bracket(a, staging))
        recipe_text = recipe_yaml_text(a) if a.recipe is not None else ""
        sections = build_sections(a, figures, recipe_text)
        sections[1:1] = tournament_sections(a, figures)
        title = f"Recipe report: study {a.study.name}"
        subtitle = (f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `thoraxmae report` "
                    f"from `{a.study.tracking_uri}`; objective `{a.study.metric}` ({a.study.mode}); top-k = "
                    f"best {top_fraction:.0%} of the completed trials (at least {min_k}); {n_bootstrap} "
                    "bootstrap resamples." + environment_line(a.study.environment))
        paths = {"html": staging / "report.html", "md": staging / "report.md",
                 "trials": staging / "trials.parquet",
                 "curves": staging / "curves.parquet"}
        paths["html"].write_text(render_html(title, subtitle, sections), encoding="utf-8")
        paths["md"].write_text(render_markdown(title, subtitle, sections), encoding="utf-8")
        if a.recipe is not None:
            paths["recipe"] = staging / "recipe.yaml"
            paths["recipe"].write_text(recipe_text, encoding="utf-8")
        a.trials.to_parquet(paths["trials"], index=False)
        a.curves.to_parquet(paths["curves"], index=False)
        if a.recipe is None:  # a stale recipe from an earlier report would contradict this one
            (out / "recipe.yaml").unlink(missing_ok=True)
        for f in [*figures.values(), *paths.values()]:
            os.replace(f, out / f.name)
    except OSError as exc:
        raise ReportError(f"{out}: cannot write the report ({reason(exc)})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {k: out / f.name for k, f in figures.items()}, {k: out / f.name for k, f in paths.items()}


def environment_line(environment: dict[str, str]) -> str:
    """The header's note of the software the study ran on (the study run's env.* params)."""
    if not environment:
        return " The study run records no package versions (a study from before thoraxmae 0.2)."
    return " Ran on " + ", ".join(f"{name} {version}" for name, version in environment.items()) + "."


def recipe_yaml_text(a: StudyAnalysis) -> str:
    """recipe.yaml: a comment header (provenance, how to run it) and the spec with the knobs fixed."""
    r, s = a.recipe, a.study
    label = ("# Exploratory: no confirmation runs; search scores only, one seed per "
             "trial." if a.confirmation is None
             else "# The search's top-k median; the report's Recipe section holds the confirmed recipes' "
                  "verdicts.")
    lines = [f"# Recipe distilled from study `{s.name}` by `thoraxmae report` ({time.strftime('%Y-%m-%d')}).",
             (f"# Searched knobs fixed to the median of the top {r.confidence.k} of {r.confidence.n_pool} "
             f"{r.confidence.pool} trials ({s.metric}, {s.mode});"),
             (f"# best trial {r.best.trial_id}: {s.metric} = {r.best.objective:.4f}. The search section is "
             "removed."),
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

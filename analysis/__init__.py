"""thoraxmae analysis package: a study's MLflow runs -> tidy tables, hyperparameter importance, marginal
effects, a recipe with its uncertainty, its confirmation runs (seed-paired verdicts against the reference
recipe, the seed noise floor), its pre-training recipes or encoders compared (and what pre-training reuse
saved), and the HTML/Markdown report. Reads only MLflow; never imports Ray.
Numbers are computed in tables/importance/effects/recipe/confirm/cost/pretraining (analyze.py runs them),
worded in claims.py, pretrain_section.py and sections.py, drawn in plots.py, and written by render.py
(report.py runs it all).

Public surface (imported on first use, so `thoraxmae --help` stays instant):
- `build_report(study_name, tracking_uri=None, out_dir="report", ...) -> ReportResult` (analysis.report)
- `load_study(name, tracking_uri=None) -> StudyRecord`, `default_tracking_uri()` (analysis.load)
- `analyze(study, AnalysisOptions) -> StudyAnalysis` (analysis.analyze): every number of the report
- `trial_table(study)`, `curve_table(study)` (analysis.tables): the tidy tables
- `ReportError` (analysis.errors)
"""
from __future__ import annotations

import importlib
from typing import Any

from thoraxmae.analysis.errors import ReportError

_LAZY = {"AnalysisOptions": "thoraxmae.analysis.analyze", "StudyAnalysis": "thoraxmae.analysis.analyze",
         "analyze": "thoraxmae.analysis.analyze",
         "StudyRecord": "thoraxmae.analysis.load", "default_tracking_uri": "thoraxmae.analysis.load",
         "load_study": "thoraxmae.analysis.load",
         "ReportResult": "thoraxmae.analysis.report", "build_report": "thoraxmae.analysis.report",
         "curve_table": "thoraxmae.analysis.tables", "trial_table": "thoraxmae.analysis.tables"}

__all__ = ["AnalysisOptions", "ReportError", "ReportResult", "StudyAnalysis", "StudyRecord", "analyze",
           "build_report", "curve_table", "default_tracking_uri", "load_study", "trial_table"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")

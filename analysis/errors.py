"""The analysis package's boundary error."""
from __future__ import annotations


class ReportError(Exception):
    """A study that cannot be reported: missing, empty, or without a scored trial. The message names
    the study and the MLflow tracking URI it was looked up in."""

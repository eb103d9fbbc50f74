"""The software a study ran on: its study run records the installed versions of the key packages
(`env.<package>` params, docs/mlflow-schema.md), and the report's header lists them."""
from __future__ import annotations

import importlib.metadata
import platform

from mlflow import MlflowClient

from tests.unit.analysis import synthetic as syn
from tests.unit.study.test_tracking import _spec
from thoraxmae.analysis.report import build_report, environment_line
from thoraxmae.study import schema
from thoraxmae.study.tracking.writer import StudyTracker


def test_the_study_run_records_the_installed_versions(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = StudyTracker(_spec(uri, tmp_path, "versions"))
    params = MlflowClient(uri).get_run(tracker.start_study()).data.params
    env = {k: v for k, v in params.items() if k.startswith(schema.ENV_PARAM_PREFIX)}
    assert env == {schema.ENV_PYTHON: platform.python_version(),
                   **{f"env.{p}": importlib.metadata.version(p) for p in schema.ENV_PACKAGES}}
    assert env["env.ray"].startswith("2.") and env["env.thoraxmae"] == importlib.metadata.version("thoraxmae")


def test_the_report_header_names_the_versions(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = syn.write_study(uri, "versions", syn.simulate_trials(12, seed=0), tmp_path / "artifacts")
    for key, value in {"env.torch": "2.14.1", "env.python": "3.11.7", "env.ray": "2.60.0"}.items():
        MlflowClient(uri).log_param(study.parent_run_id, key, value)
    result = build_report("versions", uri, tmp_path / "report", n_bootstrap=2, log_artifacts=False)
    assert result.analysis.study.environment == {"python": "3.11.7", "ray": "2.60.0", "torch": "2.14.1"}
    for text in (result.html.read_text(), result.markdown.read_text()):
        assert "Ran on python 3.11.7, ray 2.60.0, torch 2.14.1." in text
    assert "records no package versions" in environment_line({})  # a study from before the env.* params

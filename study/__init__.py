"""thoraxmae study package: the study spec, Tune + Optuna + ASHA studies, MLflow tracking, the CLI.

Public surface (heavy Ray/MLflow imports stay inside the functions' modules):
- `load_spec(path, overrides) -> StudySpec`, `StudySpec`, `SpecError` (study.spec, study.errors)
- `run_study`, `resume_study`, `init_ray` (study.tune), `submit_study` (study.submit)
- `find_study`, `study_status`, `locate_spec` (study.lookup: Ray-free); run-schema names in study.schema
"""
from thoraxmae.study.errors import SpecError
from thoraxmae.study.spec.model import StudySpec, dump_spec, load_spec

__all__ = ["SpecError", "StudySpec", "dump_spec", "load_spec"]

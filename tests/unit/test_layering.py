"""Data flows one way (docs/architecture.md): analysis never imports Ray; trainers never import study."""
import subprocess
import sys


def _imported(stmt: str) -> set[str]:
    code = f"import sys; {stmt}; print(' '.join(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_analysis_does_not_import_ray():
    assert "ray" not in _imported("import analysis, study.schema")


def test_trainers_do_not_import_study():
    assert "study" not in _imported("import trainers, trainers.config")


def test_cli_help_lists_groups():
    out = subprocess.run([sys.executable, "-m", "thoraxmae", "--help"], capture_output=True, text=True, check=True)
    for group in ("data", "pretrain", "finetune", "study", "ui", "report", "demo"):
        assert group in out.stdout

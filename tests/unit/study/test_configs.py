"""Every shipped spec in configs/ validates (the data stores live elsewhere, so they are not checked)."""
from __future__ import annotations

from pathlib import Path

import pytest

from study import schema
from study.spec import load_spec

CONFIGS = sorted((Path(__file__).parents[3] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_spec_validates(path):
    spec = load_spec(path, check_store=False)
    assert spec.name and spec.phases


def test_study_configs_start_from_the_paper_recipe():
    for name in ("demo.yaml", "paper-finetune-study.yaml", "paper-pipeline-study.yaml"):
        spec = load_spec(Path(__file__).parents[3] / "configs" / name, check_store=False)
        first = spec.points()[0]
        assert first == {k: schema.PAPER_RECIPE[k] for k in spec.search.space}, name
        assert spec.search.scheduler.type == "asha" and spec.metric == schema.M_VAL_MAUC

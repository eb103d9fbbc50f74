"""The demo's results in a real browser (issue 6): a small `thoraxmae demo`, then `thoraxmae ui` on its
MLflow file, rendered by headless Chromium. The link `thoraxmae ui` prints for the study opens its runs
page, listing the trials sorted by val/mauc; a trial's
page shows its knobs and metrics, and the demo's report.html shows its plots.

Skipped when no Chromium can be had (tests/integration/browser.py). The demo takes about five minutes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import pytest

from tests.integration import browser
from tests.integration.conftest import Demo
from tests.integration.study_helpers import free_ports, subprocess_env, trial_runs
from thoraxmae.study import schema

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def demo(demo_run) -> Demo:
    """The session's default demo (tests/integration/conftest.py), unless no Chromium can be had."""
    browser.chromium()
    return demo_run


@dataclass(frozen=True)
class UI:
    base: str
    said: str  # what `thoraxmae ui` printed


@pytest.fixture(scope="module")
def ui(demo, tmp_path_factory) -> UI:
    """`thoraxmae ui` on the demo's MLflow file, serving."""
    (port,) = free_ports(1)
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    with browser.serving_ui(demo.uri, port, log, env=subprocess_env()) as base:
        yield UI(base, log.read_text())


@pytest.fixture(scope="module")
def trials(demo) -> list:
    """The demo's trial runs (the tournament's scoring fine-tunes: 4 recipes x 2 at rung 1, the 2 kept x 2 at
    rung 2), best val/mauc first."""
    runs = trial_runs(demo.uri, demo.study)
    assert len(runs) == 12
    return sorted(runs, key=lambda r: -r.data.metrics.get(schema.M_VAL_MAUC, float("-inf")))


def test_the_printed_link_lists_the_trials_by_val_mauc(demo, ui, trials):
    """The link `thoraxmae ui` prints for the study opens its runs table: trials only, sorted by val/mauc."""
    query = urlencode({"searchFilter": f"tags.`{schema.TAG_ROLE}` = '{schema.ROLE_TRIAL}'",
                       "orderByKey": f"metrics.`{schema.M_VAL_MAUC}`", "orderByAsc": "false"},
                       quote_via=quote)
    url = f"{ui.base}/#/experiments/{demo.experiment_id}/runs?{query}"
    assert f": {url}\n" in ui.said, ui.said  # the line `thoraxmae ui` printed for the demo's study
    assert all(r.info.run_name.startswith(f"{demo.study}-")
               for r in trials), [r.info.run_name for r in trials]
    names = [r.info.run_name for r in trials[:4]]  # the top of the table (the grid renders what is in view)
    dom = browser.dom_showing(url, [*names, schema.M_VAL_MAUC])
    missing = [n for n in [*names, schema.M_VAL_MAUC] if n not in dom]
    assert not missing, f"{missing} not on the rendered runs page"
    assert [dom.index(n) for n in names] == sorted(dom.index(n) for n in names), "not sorted by val/mauc"
    assert f"{len(trials)} matching runs" in re.sub(r"<[^>]+>", "", dom)


def test_trial_page_shows_its_knobs_and_metrics(demo, ui, trials):
    best = trials[0]
    url = f"{ui.base}/#/experiments/{demo.experiment_id}/runs/{best.info.run_id}"
    val_mauc = str(best.data.metrics[schema.M_VAL_MAUC])
    needles = [best.info.run_name, "pretrain.mask_ratio", "finetune.layer_decay", schema.M_VAL_MAUC, val_mauc]
    assert {"pretrain.mask_ratio", "finetune.layer_decay"} <= best.data.params.keys()
    dom = browser.dom_showing(url, needles, size=(1600, 2400))
    missing = [n for n in needles if n not in dom]
    assert not missing, f"{missing} not on the rendered page of trial {best.info.run_name}"


def test_demo_report_shows_its_plots(demo, tmp_path):
    images = browser.report_images(demo.report)
    assert len(images) >= 4 and all(i.format == "PNG" and min(i.size) >= 200 for i in images)
    pixels = browser.screenshot(demo.report.as_uri(), tmp_path / "report.png", size=(1280, 7000))
    browser.assert_plots_visible(pixels, min_blue=1_000)  # two trials draw few marks

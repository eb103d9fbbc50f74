"""report.html opens in a real browser and shows its plots: headless Chromium renders it to a PNG.

Skipped when no Chromium can be had (see tests/integration/browser.py: $CHROMIUM, PATH, apt-get as root).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import browser
from tests.unit.analysis import synthetic as syn
from thoraxmae.analysis import build_report

pytestmark = pytest.mark.integration
WIDTH, HEIGHT = 1280, 4000


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    syn.write_study(uri, "shown", syn.simulate_trials(24, seed=0), root / "artifacts")
    return build_report("shown", uri, root / "report", n_bootstrap=4, log_artifacts=False).html


def test_every_image_in_the_html_resolves(report_html):
    images = browser.report_images(report_html)
    assert len(images) == 7
    for image in images:
        assert image.format == "PNG" and min(image.size) >= 200


def test_headless_chromium_renders_the_plots(report_html, tmp_path):
    pixels = browser.screenshot(report_html.resolve().as_uri(), tmp_path / "report.png", size=(WIDTH, HEIGHT))
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    browser.assert_plots_visible(pixels)

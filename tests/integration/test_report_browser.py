"""report.html opens in a real browser and shows its plots: headless Chromium renders it to a PNG.

Skipped when no Chromium is installed (Debian: `apt-get install chromium`; or set $CHROMIUM to its path).
"""
from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from analysis import build_report
from tests.unit.analysis import synthetic as syn

pytestmark = pytest.mark.integration
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
WIDTH, HEIGHT = 1280, 4000
PLOT_BLUE = np.array([0x1F, 0x77, 0xB4])  # matplotlib's C0: bars, dots and curves in every figure


def _chromium() -> str | None:
    return os.environ.get("CHROMIUM") or next((p for p in map(shutil.which, BROWSERS) if p), None)


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    syn.write_study(uri, "shown", syn.simulate_trials(24, seed=0), root / "artifacts")
    return build_report("shown", uri, root / "report", n_bootstrap=4, log_artifacts=False).html


def test_every_image_in_the_html_resolves(report_html):
    sources = re.findall(r'<img [^>]*src="([^"]+)"', report_html.read_text())
    assert len(sources) == 7
    for src in sources:
        if src.startswith("data:"):
            assert src.startswith("data:image/png;base64,")
            image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        else:  # a PNG next to the page
            image = Image.open(report_html.parent / src)
        assert image.format == "PNG" and min(image.size) >= 200


def test_headless_chromium_renders_the_plots(report_html, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium found (apt-get install chromium, or set $CHROMIUM): cannot render report.html")
    shot = tmp_path / "report.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}",
           report_html.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file(), f"no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    pixels = np.asarray(Image.open(shot).convert("RGB"))  # [H, W, 3]
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500, "blank screenshot"
    blue = (np.abs(pixels.astype(int) - PLOT_BLUE).max(axis=2) <= 12).sum()
    assert blue > 2_000, f"only {blue} plot-coloured pixels: the figures did not render"

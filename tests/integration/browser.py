"""Headless Chromium for the browser tests: find it (or install it once with apt-get), render a page;
and `thoraxmae ui` served for the duration of a test.

`chromium()` skips the calling test, naming the reason, when no Chromium can be had. $CHROMIUM picks
a binary explicitly. Each render gets a fresh profile and no network besides the page's own host.
"""
from __future__ import annotations

import base64
import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars")
PLOT_BLUE = np.array([0x1F, 0x77, 0xB4])  # matplotlib's C0: bars, dots and curves in every report figure
APT_TIMEOUT_S = 900
_install_outcome: str | None = None  # why the one apt-get attempt of this process did not help


def chromium() -> str:
    """A Chromium binary: $CHROMIUM, one on PATH, or one apt-get installs (root only, tried once)."""
    found = _find()
    if found is None:
        reason = _install_once()
        found = _find()
        if found is None:
            pytest.skip(f"no Chromium ({reason}): `apt-get install chromium`, or set $CHROMIUM to a Chrome "
                        "binary")
    return found


def _find() -> str | None:
    return os.environ.get("CHROMIUM") or next((p for p in map(shutil.which, BROWSERS) if p), None)


def _install_once() -> str:
    global _install_outcome
    if _install_outcome is None:
        _install_outcome = _apt_install()
    return _install_outcome


def _apt_install() -> str:
    if not shutil.which("apt-get"):
        return "none on PATH and no apt-get to install one"
    if os.geteuid() != 0:
        return "none on PATH and not root, so no apt-get install"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        done = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, text=True,
                              env=env, timeout=APT_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return f"`apt-get install -y chromium` ran past {APT_TIMEOUT_S} s"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"`apt-get install -y chromium` failed with exit {done.returncode}: {last}"
    return "`apt-get install -y chromium` succeeded but no browser is on PATH"


def _run(url: str, *args: str, size: tuple[int, int], budget_ms: int | None, timeout: float) -> str:
    """Chromium's stdout for one headless render of `url` in a throw-away profile."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}", *args]
        if budget_ms is not None:  # let the page's scripts and fetches settle first
            cmd.append(f"--virtual-time-budget={budget_ms}")
        done = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"chromium exit {done.returncode} on {url}: {done.stderr[-2000:]}"
    return done.stdout


def dump_dom(url: str, size: tuple[int, int] = (1600, 1000), budget_ms: int = 15_000,
             timeout: float = 120) -> str:
    """The page's DOM, serialised after its scripts ran (a single-page app's rendered HTML)."""
    return _run(url, "--dump-dom", size=size, budget_ms=budget_ms, timeout=timeout)


def dom_showing(url: str, needles: list[str], attempts: int = 3, **kwargs) -> str:
    """dump_dom, re-rendered (a freshly started server may answer its first API calls slowly) until
    every needle is in it or the attempts are spent; the caller asserts on what came back."""
    for _ in range(attempts):
        dom = dump_dom(url, **kwargs)
        if all(n in dom for n in needles):
            break
    return dom


def screenshot(url: str, png: Path, size: tuple[int, int] = (1280, 4000), budget_ms: int | None = None,
               timeout: float = 120) -> np.ndarray:
    """The page rendered to `png`; returns its pixels [H, W, 3]."""
    _run(url, f"--screenshot={png}", size=size, budget_ms=budget_ms, timeout=timeout)
    assert png.is_file(), f"chromium wrote no screenshot of {url}"
    return np.asarray(Image.open(png).convert("RGB"))  # [H, W, 3]


def report_images(html: Path) -> list[Image.Image]:
    """Every <img> of a report page, decoded: inline data: PNGs, or PNG files beside the page."""
    images = []
    for src in re.findall(r'<img [^>]*src="([^"]+)"', html.read_text()):
        if src.startswith("data:"):
            assert src.startswith("data:image/png;base64,"), src[:40]
            images.append(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
        else:
            images.append(Image.open(html.parent / src))
    return images


def assert_plots_visible(pixels: np.ndarray, min_blue: int = 2_000) -> None:
    """A screenshot of a report shows its figures: not blank, and matplotlib's blue is drawn."""
    rgb = pixels.astype(np.int32)  # [H, W, 3]
    colours = np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])
    assert pixels.std() > 20 and len(colours) > 500, "blank screenshot"
    blue = (np.abs(rgb - PLOT_BLUE).max(axis=2) <= 12).sum()
    assert blue > min_blue, f"only {blue} plot-coloured pixels: the figures did not render"


@contextlib.contextmanager
def serving_ui(uri: str, port: int, log: Path, *options: str, env: dict[str, str] | None = None,
               timeout: float = 120) -> Iterator[str]:
    """`thoraxmae ui` on `port` until the block ends (its whole process group is stopped then);
    yields its base URL once /health answers."""
    thoraxmae = Path(sys.executable).with_name("thoraxmae")
    cmd = [str(thoraxmae), "ui", "--tracking-uri", uri, "--port", str(port), *options]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, f"{base}/health", log, timeout)
        yield base
    finally:
        _stop_group(proc)


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"thoraxmae ui exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"thoraxmae ui did not answer {url} within {timeout:.0f} "
                         f"s:\n{log.read_text()[-3000:]}")


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the group (thoraxmae, mlflow, uvicorn and its workers), then SIGKILL to any left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(20)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)

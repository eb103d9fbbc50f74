"""The phantom's normal anatomy: a PA chest radiograph drawn as a density map.

Coordinates are normalised so one drawing serves every image size: `u` runs left -> right and `v`
top -> bottom, both over 0..1 (broadcast as u [1, S] and v [S, 1]). The image's left is the patient's
right (radiological convention), so the heart sits right of centre. Density 0 is air (black), ~0.55
soft tissue; the lungs subtract their air, bones and findings add. Every shape is a soft mask (a
clipped ramp one or two pixels wide), so edges are anti-aliased at any size.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

SOFT_TISSUE = 0.55  # density of the body outside the lungs
LUNG_AIR = 0.34  # what aerated lung subtracts from SOFT_TISSUE
SIDES = (-1, 1)  # -1: patient's right lung (image left), +1: patient's left lung (image right)


@functools.lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres: u [1, S] and v [S, 1], float32 in (0, 1)."""
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return c[None, :], c[:, None]


def soft_inside(dist: np.ndarray, size: int, width: float = 0.0) -> np.ndarray:
    """1 where the signed distance `dist` (normalised units, < 0 inside) is inside, a linear ramp of
    max(width, 1.5 px) across the edge, 0 outside."""
    w = max(width, 1.5 / size)
    return np.clip(0.5 - dist / w, 0.0, 1.0)


def ellipse_dist(u: np.ndarray, v: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse (exact on the axes of a circle)."""
    return (np.sqrt(((u - cx) / a) ** 2 + ((v - cy) / b) ** 2) - 1.0) * min(a, b)


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a `cells` x `cells` random grid upsampled bicubically to [S, S]."""
    coarse = Image.fromarray(rng.random((cells, cells), dtype=np.float32), mode="F")
    return np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC)).clip(0.0, 1.0)


@dataclass
class Anatomy:
    """Geometry of one chest (normalised units). A patient's follow-ups share it up to small jitter."""

    cx: float = 0.5  # body midline
    thorax: float = 0.31  # half-width from the midline to the lungs' outer edges
    med: float = 0.045  # half-width of the mediastinum between the lungs
    lung_top: float = 0.15
    lung_cy: float = 0.50
    dome_base: tuple[float, float] = (0.70, 0.72)  # diaphragm at the lateral ends (right, left)
    dome_height: float = 0.08
    ctr: float = 0.45  # cardiothoracic ratio (heart width / chest width); > 0.55 is cardiomegaly
    heart_cy: float = 0.56
    heart_hb: float = 0.12
    rib_spacing: float = 0.056
    rib_phase: float = 0.0
    lucency: float = 1.0  # x LUNG_AIR (emphysema > 1)
    markings: float = 1.0  # vessel marking gain (emphysema < 1)

    def lung_ellipse(self, side: int) -> tuple[float, float, float, float]:
        """(cx, cy, a, b) of one lung's outline before the diaphragm cuts it."""
        a = (self.thorax - self.med) / 2
        return self.cx + side * (self.med + a), self.lung_cy, a, self.lung_cy - self.lung_top

    def dome(self, side: int, u: np.ndarray) -> np.ndarray:
        """The diaphragm's height under one lung: `dome_base` laterally, `dome_height` higher at the top."""
        lx, _, a, _ = self.lung_ellipse(side)
        base = self.dome_base[0 if side < 0 else 1]
        return base - self.dome_height * np.clip(1.0 - ((u - lx) / (1.3 * a)) ** 2, 0.0, 1.0)

    def hilum(self, side: int) -> tuple[float, float]:
        return self.cx + side * (self.med + 0.05), self.lung_cy - 0.05


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """A random normal chest (CTR 0.38-0.50)."""
    base = rng.uniform(0.68, 0.74)
    return Anatomy(
        cx=0.5 + rng.normal(0, 0.012), thorax=rng.uniform(0.28, 0.33), med=rng.uniform(0.04, 0.055),
        lung_top=rng.uniform(0.13, 0.18), lung_cy=rng.uniform(0.47, 0.52),
        dome_base=(base, base + rng.uniform(0.0, 0.03)), dome_height=rng.uniform(0.06, 0.09),
        ctr=rng.uniform(0.38, 0.50), heart_cy=rng.uniform(0.54, 0.58), heart_hb=rng.uniform(0.10, 0.13),
        rib_spacing=rng.uniform(0.05, 0.06), rib_phase=rng.uniform(0, 1),
    )


def jitter(anat: Anatomy, rng: np.random.Generator) -> Anatomy:
    """A follow-up of the same patient: small shifts of position and inspiration."""
    d = rng.normal(0, 0.006)
    return Anatomy(**{**anat.__dict__, "cx": anat.cx + rng.normal(0, 0.006),
                      "dome_base": (anat.dome_base[0] + d, anat.dome_base[1] + d),
                      "lung_top": anat.lung_top + rng.normal(0, 0.004), "rib_phase": rng.uniform(0, 1)})


class Chest:
    """One radiograph being drawn: the anatomy's masks plus the density map findings add to."""

    def __init__(self, anat: Anatomy, size: int):
        self.anat, self.size = anat, size
        self.u, self.v = grid(size)
        u, v = self.u, self.v
        self.lungs = {s: self._lung(s) for s in SIDES}  # side -> [S, S] mask
        hx = anat.cx + 0.025  # the heart sits two-thirds on the patient's left
        ha = anat.ctr * anat.thorax
        self.heart = soft_inside(ellipse_dist(u, v, hx, anat.heart_cy, ha, anat.heart_hb), size, 0.01)
        knob = soft_inside(ellipse_dist(u, v, anat.cx + anat.med + 0.01, anat.lung_top + 0.13, 0.035, 0.03),
                           size)
        self.tissue = np.maximum(self.heart, knob)  # mediastinal soft tissue over the lungs
        self.aerated = {s: self.lungs[s] * (1.0 - self.tissue) for s in SIDES}  # lung not behind the heart
        self.air = self.aerated[-1] + self.aerated[1]  # [S, S]
        body = soft_inside(ellipse_dist(u, v, anat.cx, 0.64, 0.45, 0.62), size, 0.02)
        neck = soft_inside(np.abs(u - anat.cx) - 0.08, size, 0.01) * (v < 0.2)
        self.density = SOFT_TISSUE * np.maximum(body, neck) - LUNG_AIR * anat.lucency * self.air
        self.marking_gain = np.full((1, 1), anat.markings, np.float32)  # findings may make it [S, S]

    def _lung(self, side: int) -> np.ndarray:
        lx, ly, a, b = self.anat.lung_ellipse(side)
        outline = soft_inside(ellipse_dist(self.u, self.v, lx, ly, a, b), self.size, 0.008)
        return outline * soft_inside(self.v - self.anat.dome(side, self.u), self.size, 0.006)

    def add_bones(self) -> None:
        """Ribs (posterior arcs), clavicles and the spine."""
        a, u, v = self.anat, self.u, self.v
        du = np.abs(u - a.cx)
        # arcs rising, then falling laterally
        phase = (v + 0.15 * du - 1.1 * du**2) / a.rib_spacing + a.rib_phase
        ribs = np.clip((np.cos(2 * np.pi * phase) - 0.45) * 3.0, 0.0, 1.0)
        cage = (soft_inside(du - a.thorax - 0.02, self.size, 0.02)
                * soft_inside(a.lung_top - 0.02 - v, self.size))
        self.density += 0.06 * ribs * cage * soft_inside(v - max(a.dome_base) - 0.02, self.size, 0.02)
        for side in SIDES:
            self.density += 0.12 * soft_inside(segment_dist(u, v, (a.cx + side * 0.04, a.lung_top + 0.04),
                                                             (a.cx + side * 0.27, a.lung_top - 0.01)) - 0.012,
                                               self.size)
        vertebrae = 0.6 + 0.4 * np.cos(2 * np.pi * v / 0.045)
        self.density += 0.07 * vertebrae * soft_inside(du - 0.032, self.size)

    def add_markings(self) -> None:
        """Vessel markings: streaks radiating from each hilum, fading to the periphery."""
        a, u, v = self.anat, self.u, self.v
        for side in SIDES:
            hx, hy = a.hilum(side)
            dx, dy = u - hx, v - hy
            r = np.sqrt(dx**2 + dy**2)
            theta = np.arctan2(dy, dx * side)
            wobble = 0.8 * np.sin(r * 35.0 + 3.0 * side + a.rib_phase * 6.0)
            streaks = (0.5 + 0.5 * np.cos(22.0 * theta + wobble)) ** 4
            self.density += 0.09 * streaks * np.exp(-r / 0.14) * self.aerated[side] * self.marking_gain

    def finish(self, rng: np.random.Generator) -> np.ndarray:
        """Exposure, film noise and quantisation -> uint8 [S, S]."""
        gain, offset = rng.uniform(0.9, 1.1), rng.normal(0.02, 0.02)
        img = self.density * gain + offset + 0.04 * (smooth_noise(rng, self.size, 5) - 0.5)
        img += rng.normal(0, rng.uniform(0.01, 0.025), size=img.shape).astype(np.float32)
        return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def segment_dist(u: np.ndarray, v: np.ndarray, p: tuple[float, float], q: tuple[float, float]) -> np.ndarray:
    """Distance from each pixel to the segment p-q."""
    ex, ey = q[0] - p[0], q[1] - p[1]
    t = np.clip(((u - p[0]) * ex + (v - p[1]) * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    return np.sqrt((u - p[0] - t * ex) ** 2 + (v - p[1] - t * ey) ** 2)

"""The phantom's findings: how each of the 14 ChestX-ray14 labels changes a chest radiograph.

Some labels change the anatomy before it is drawn (Cardiomegaly widens the heart past a
cardiothoracic ratio of 0.55, Emphysema makes the lungs hyperlucent with flat domes, Atelectasis and
Fibrosis lose volume); Pneumothorax removes the markings of an apical crescent; the rest add opacities
in the lungs (fluid replaces air). `render` draws one image from an anatomy and a label row.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from thoraxmae.datasets.phantom_anatomy import (
    SIDES,
    Anatomy,
    Chest,
    ellipse_dist,
    segment_dist,
    smooth_noise,
    soft_inside,
)

Draw = Callable[[Chest, np.random.Generator, int], None]


def _side_index(side: int) -> int:
    return 0 if side < 0 else 1


def _sides(side: int) -> tuple[int, ...]:
    """0 means both lungs."""
    return SIDES if side == 0 else (side,)


def lung_point(c: Chest, side: int, rng: np.random.Generator, v_range: tuple[float, float] = (0.0, 1.0),
               reach: float = 0.7) -> tuple[float, float]:
    """A random point well inside one lung's aerated part (not behind the heart), v in `v_range` if
    possible."""
    lx, ly, a, b = c.anat.lung_ellipse(side)
    for _ in range(30):
        r, t = reach * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        x, y = lx + r * a * np.cos(t), ly + r * b * np.sin(t)
        row, col = min(int(y * c.size), c.size - 1), min(int(x * c.size), c.size - 1)
        if v_range[0] <= y <= v_range[1] and y < float(c.anat.dome(side, np.float32(x))) - 0.04 \
                and c.aerated[side][row, col] > 0.99:
            return float(x), float(y)
    return lx, ly - 0.1 * b


# ---------------------------------------------------------------- anatomy changes

def shape_anatomy(anat: Anatomy, positive: Sequence[str], sides: dict[str, int],
                  rng: np.random.Generator) -> Anatomy:
    """The anatomy with the label-driven changes applied."""
    if "Cardiomegaly" in positive:
        anat = replace(anat, ctr=rng.uniform(0.57, 0.68))
    if "Emphysema" in positive:
        base = tuple(d + 0.04 for d in anat.dome_base)
        anat = replace(anat, lucency=1.3, markings=0.4, dome_height=anat.dome_height * 0.3,
                       dome_base=base, thorax=anat.thorax + 0.01)
    if "Atelectasis" in positive:
        base = list(anat.dome_base)
        for s in _sides(sides["Atelectasis"]):
            base[_side_index(s)] -= 0.03
        anat = replace(anat, dome_base=tuple(base))
    if "Fibrosis" in positive:
        anat = replace(anat, dome_base=tuple(d - 0.02 for d in anat.dome_base), thorax=anat.thorax - 0.01)
    return anat


# ---------------------------------------------------------------- drawers

def pneumothorax(c: Chest, rng: np.random.Generator, side: int) -> None:
    """A marking-free crescent at the apex and lateral wall, bounded by a thin pleural line; the
    collapsed lung is a little denser."""
    lx, ly, a, b = c.anat.lung_ellipse(side)
    f = rng.uniform(0.2, 0.35)
    d = ellipse_dist(c.u, c.v, lx - side * a * f * 0.6, ly + b * f * 0.7, a * (1 - f), b * (1 - 0.8 * f))
    collapsed = soft_inside(d, c.size)
    crescent = c.lungs[side] * (1.0 - collapsed)
    c.marking_gain = c.marking_gain * (1.0 - crescent)
    line = soft_inside(np.abs(d) - 0.003, c.size) * c.lungs[side]
    c.density += 0.14 * line - 0.1 * crescent + 0.04 * collapsed * c.aerated[side]


def effusion(c: Chest, rng: np.random.Generator, side: int) -> None:
    """Basal fluid: blunts the costophrenic angle, rises laterally in a meniscus."""
    for s in _sides(side):
        lx, _, a, _ = c.anat.lung_ellipse(s)
        lateral = np.clip((c.u - lx) * s / a, -1.0, 1.0) * 0.5 + 0.5  # 0 medial .. 1 lateral
        level = c.anat.dome_base[_side_index(s)] - rng.uniform(0.05, 0.15) - 0.12 * lateral**2
        c.density += 0.30 * soft_inside(level - c.v, c.size, 0.015) * c.aerated[s]


def atelectasis(c: Chest, rng: np.random.Generator, side: int) -> None:
    """Plate-like linear opacities at the bases (with the raised hemidiaphragm of shape_anatomy)."""
    for s in _sides(side):
        x, y = lung_point(c, s, rng, (0.5, 0.66))
        half, tilt = rng.uniform(0.04, 0.07), rng.uniform(-0.25, 0.25)
        p, q = (x - half, y - half * tilt), (x + half, y + half * tilt)
        band = soft_inside(segment_dist(c.u, c.v, p, q) - rng.uniform(0.01, 0.018), c.size, 0.006)
        c.density += 0.24 * band * c.aerated[s]


def consolidation(c: Chest, rng: np.random.Generator, side: int) -> None:
    """A dense lobar opacity bounded by a fissure."""
    lx, ly, _, _ = c.anat.lung_ellipse(side)
    fissure = ly + rng.uniform(-0.02, 0.06) + rng.uniform(-0.2, 0.2) * (c.u - lx)
    lower = rng.random() < 0.7
    zone = soft_inside((fissure - c.v) if lower else (c.v - fissure), c.size)
    texture = 0.75 + 0.25 * smooth_noise(rng, c.size, 12)
    c.density += 0.28 * zone * texture * c.aerated[side]


def pneumonia(c: Chest, rng: np.random.Generator, side: int) -> None:
    """An ill-defined patchy airspace opacity in the middle or lower zone."""
    x, y = lung_point(c, side, rng, (0.42, 0.66))
    sigma = rng.uniform(0.06, 0.09)
    blob = np.exp(-((c.u - x) ** 2 + (c.v - y) ** 2) / (2 * sigma**2))
    patches = 0.5 + 0.5 * smooth_noise(rng, c.size, 10)
    c.density += 0.30 * blob * patches * c.aerated[side]


def infiltration(c: Chest, rng: np.random.Generator, side: int) -> None:
    """Patchy faint opacities scattered over one or both lungs."""
    patches = np.clip((smooth_noise(rng, c.size, 9) - 0.5) * 4.0, 0.0, 1.0)
    for s in _sides(side):
        c.density += 0.17 * patches * c.aerated[s]


def edema(c: Chest, rng: np.random.Generator, side: int) -> None:
    """Bilateral perihilar "bat-wing" haze and Kerley B lines at the lateral bases."""
    for s in SIDES:
        hx, hy = c.anat.hilum(s)
        wing = np.exp(-(((c.u - hx) / 0.13) ** 2 + ((c.v - hy) / 0.16) ** 2))
        c.density += 0.22 * wing * c.aerated[s]
        lx, _, a, _ = c.anat.lung_ellipse(s)
        x_edge, base = lx + s * 0.85 * a, c.anat.dome_base[_side_index(s)]
        for k in range(4):
            y = base - 0.05 - 0.025 * k
            kerley = segment_dist(c.u, c.v, (x_edge - s * 0.04, y), (x_edge, y))
            c.density += 0.08 * soft_inside(kerley - 0.003, c.size) * c.aerated[s]


def nodule(c: Chest, rng: np.random.Generator, side: int) -> None:
    """One to three small round opacities."""
    for _ in range(1 if rng.random() < 0.75 else int(rng.integers(2, 4))):
        s = side if side else int(rng.choice(SIDES))
        x, y = lung_point(c, s, rng)
        d = np.sqrt((c.u - x) ** 2 + (c.v - y) ** 2) - rng.uniform(0.014, 0.024)
        c.density += 0.30 * soft_inside(d, c.size, 0.004)


def mass(c: Chest, rng: np.random.Generator, side: int) -> None:
    """A large lobulated opacity."""
    x, y = lung_point(c, side, rng, reach=0.55)
    r0, phase = rng.uniform(0.045, 0.075), rng.uniform(0, 2 * np.pi)
    dx, dy = c.u - x, c.v - y
    radius = r0 * (1.0 + 0.12 * np.cos(3 * np.arctan2(dy, dx) + phase))
    c.density += 0.32 * soft_inside(np.sqrt(dx**2 + dy**2) - radius, c.size, 0.006)


def fibrosis(c: Chest, rng: np.random.Generator, side: int) -> None:
    """Reticular lines, worst in the lower and peripheral zones."""
    uu = c.u + 0.03 * smooth_noise(rng, c.size, 6)
    vv = c.v + 0.03 * smooth_noise(rng, c.size, 6)
    freq = rng.uniform(16, 22)
    net = np.maximum(np.cos(2 * np.pi * freq * uu), np.cos(2 * np.pi * freq * vv))
    lines = np.clip((net - 0.6) * 2.5, 0.0, 1.0)
    zone = 1.0 / (1.0 + np.exp(-(c.v - c.anat.lung_cy) / 0.06))
    c.density += 0.16 * lines * zone * (c.aerated[-1] + c.aerated[1])


def pleural_thickening(c: Chest, rng: np.random.Generator, side: int) -> None:
    """A smooth pleural rim along the lateral chest wall and apex."""
    for s in _sides(side):
        lx, ly, a, b = c.anat.lung_ellipse(s)
        d = ellipse_dist(c.u, c.v, lx, ly, a, b)
        rim = c.aerated[s] * (1.0 - soft_inside(d + rng.uniform(0.015, 0.03), c.size))
        lateral = np.clip((c.u - lx) * s / a + 0.4, 0.0, 1.0)
        c.density += 0.30 * rim * lateral


def hernia(c: Chest, rng: np.random.Generator, side: int) -> None:
    """A hiatal hernia: a gas bubble with an air-fluid level behind the heart."""
    a = c.anat
    x, y, r = a.cx + 0.03, min(a.dome_base) - a.dome_height - 0.03, rng.uniform(0.045, 0.06)
    d = np.sqrt((c.u - x) ** 2 + (c.v - y) ** 2) - r
    inside = soft_inside(d, c.size)
    air = inside * soft_inside(c.v - (y + 0.3 * r), c.size)  # gas above the fluid level
    c.density += 0.06 * soft_inside(np.abs(d) - 0.004, c.size) - 0.22 * air


# Drawn in this order; pneumothorax first because it gates the vessel markings.
PRE_MARKING: dict[str, Draw] = {"Pneumothorax": pneumothorax}
OPACITIES: dict[str, Draw] = {
    "Effusion": effusion, "Atelectasis": atelectasis, "Consolidation": consolidation, "Pneumonia": pneumonia,
    "Infiltration": infiltration, "Edema": edema, "Nodule": nodule, "Mass": mass, "Fibrosis": fibrosis,
    "Pleural_Thickening": pleural_thickening, "Hernia": hernia,
}
BILATERAL = {"Effusion": 0.3, "Atelectasis": 0.2, "Infiltration": 0.4, "Nodule": 0.3,
             "Pleural_Thickening": 0.3}


def choose_sides(positive: Sequence[str], rng: np.random.Generator) -> dict[str, int]:
    """The lung each finding affects: -1 right, +1 left, 0 both."""
    out = {}
    for name in positive:
        both = rng.random() < BILATERAL.get(name, 0.0)
        out[name] = 0 if both else int(rng.choice(SIDES))
    return out


def render(anat: Anatomy, positive: Sequence[str], size: int, rng: np.random.Generator) -> np.ndarray:
    """One radiograph of `anat` showing the findings `positive` -> uint8 [size, size]."""
    sides = choose_sides(positive, rng)
    chest = Chest(shape_anatomy(anat, positive, sides, rng), size)
    for name, draw in PRE_MARKING.items():
        if name in positive:
            draw(chest, rng, sides[name])
    chest.add_bones()
    chest.add_markings()
    for name, draw in OPACITIES.items():
        if name in positive:
            draw(chest, rng, sides[name])
    return chest.finish(rng)

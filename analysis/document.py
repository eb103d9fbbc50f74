"""The report as a small document model: sections of paragraphs, bullets, tables, figures and code.

analysis/sections.py and analysis/claims.py fill it from the computed analysis; analysis/render.py
writes it as HTML or Markdown. Inline text may use `code` spans and **bold**; both renderers
understand them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class FigureRef:
    path: Path
    title: str
    takeaway: str


@dataclass
class Code:
    text: str


@dataclass
class Bullets:
    items: list[str]


Block = str | Table | FigureRef | Code | Bullets


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


def figure(figures: dict[str, Path], name: str, title: str, takeaway: str, missing: str) -> Block:
    """The figure when it was drawn, else a visible line saying why it is not there."""
    if name in figures:
        return FigureRef(figures[name], title, takeaway)
    return f"**No {title.lower()} figure**: {missing}."


"""Write the report's sections (analysis/document.py) as one self-contained HTML page (figures embedded
as base64 PNG) or as Markdown that links the PNG files saved beside it."""
from __future__ import annotations

import base64
import html
import re

from thoraxmae.analysis.document import Bullets, Code, FigureRef, Section, Table

CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; color: #1d1d1f; margin: 0;
       background: #f5f5f7; line-height: 1.45; }
main { max-width: 1080px; margin: 0 auto; padding: 24px 32px 64px; background: #fff; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #e5e5ea; padding-bottom: 4px;
margin-top: 2em; } .sub { color: #6e6e73; margin-top: 0; }
nav { font-size: 0.9em; margin: 12px 0 8px; } nav a { margin-right: 14px; color: #0066cc; text-decoration: none; }
table { border-collapse: collapse; margin: 12px 0; font-size: 0.86em; display: block; overflow-x: auto;
        max-width: 100%; }
th, td { border: 1px solid #d2d2d7; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f7; } tr:nth-child(even) td { background: #fafafa; }
code { background: #f2f2f7; padding: 1px 4px; border-radius: 3px; font-size: 0.92em; }
td code, th code { font-size: 1em; }
pre { background: #1d1d1f; color: #f5f5f7; padding: 12px 16px; border-radius: 6px; overflow-x: auto;
      font-size: 0.85em; }
pre code { background: none; padding: 0; }
figure { margin: 18px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #e5e5ea; }
figcaption { font-size: 0.92em; color: #3a3a3c; margin-top: 4px; }
"""


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    nav = " ".join(f'<a href="#{_anchor(s.title)}">{html.escape(s.title)}</a>' for s in sections)
    body = "\n".join(_html_section(s) for s in sections)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body><main>\n"
            f"<h1>{html.escape(title)}</h1><p class=\"sub\">{_inline(subtitle)}</p><nav>{nav}</nav>\n"
            f"{body}\n</main></body></html>\n")


def render_markdown(title: str, subtitle: str, sections: list[Section]) -> str:
    parts = [f"# {title}", "", subtitle, ""]
    for s in sections:
        parts += [f"## {s.title}", ""]
        for block in s.blocks:
            parts += [_md_block(block), ""]
    return "\n".join(parts).rstrip() + "\n"


def _html_section(s: Section) -> str:
    blocks = "\n".join(_html_block(b) for b in s.blocks)
    return f'<section id="{_anchor(s.title)}"><h2>{html.escape(s.title)}</h2>\n{blocks}</section>'


def _html_block(block) -> str:
    if isinstance(block, str):
        return f"<p>{_inline(block)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Code):
        return f"<pre><code>{html.escape(block.text)}</code></pre>"
    if isinstance(block, FigureRef):
        data = base64.b64encode(block.path.read_bytes()).decode("ascii")
        return (f'<figure><img alt="{html.escape(block.title)}" src="data:image/png;base64,{data}">'
                f"<figcaption><strong>{html.escape(block.title)}.</strong> "
                f"{_inline(block.takeaway)}</figcaption></figure>")
    if isinstance(block, Table):
        head = "".join(f"<th>{_inline(h)}</th>" for h in block.header)
        rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>"
                       for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    raise TypeError(f"unknown report block {type(block).__name__}")


def _md_block(block) -> str:
    if isinstance(block, str):
        return block
    if isinstance(block, Bullets):
        return "\n".join(f"- {i}" for i in block.items)
    if isinstance(block, Code):
        return f"```yaml\n{block.text.rstrip()}\n```"
    if isinstance(block, FigureRef):
        return f"![{block.title}]({block.path.name})\n\n*{block.title}.* {block.takeaway}"
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_md_cell(h) for h in block.header) + " |",
                 "|" + "|".join("---" for _ in block.header) + "|"]
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        return "\n".join(lines)
    raise TypeError(f"unknown report block {type(block).__name__}")


def _inline(text: str) -> str:
    """Escape, then `code` -> <code> and **bold** -> <strong>."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")

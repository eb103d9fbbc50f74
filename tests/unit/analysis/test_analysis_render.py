"""thoraxmae.analysis.render: the same sections as self-contained HTML and as Markdown."""
import base64

import numpy as np
import pandas as pd

from thoraxmae.analysis.document import Bullets, Code, FigureRef, Section, Table
from thoraxmae.analysis.render import render_html, render_markdown
from thoraxmae.analysis.tables import fmt

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
                       "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def _sections(tmp_path):
    png = tmp_path / "effects.png"
    png.write_bytes(PNG)
    return [Section("Recipe & <knobs>", ["`finetune.drop_path` is **free**", Bullets(["a < b"]),
                                        Table(["knob", "value"], [["`x|y`", fmt(0.123456)]]),
                                        Code("a: 1\n")]),
            Section("Effects", [FigureRef(png, "Marginal effects", "best around 0.6")])]


def test_html_is_self_contained_and_escaped(tmp_path):
    page = render_html("Report <s>", "from `sqlite:///x.db`", _sections(tmp_path))
    assert page.count("data:image/png;base64,") == 1 and 'src="effects.png"' not in page
    assert "<code>finetune.drop_path</code> is <strong>free</strong>" in page
    assert "a &lt; b" in page and "Report &lt;s&gt;" in page and "Recipe &amp; &lt;knobs&gt;" in page
    assert "<td>0.1235</td>" in page and '<a href="#recipe-knobs">' in page
    assert "<figcaption><strong>Marginal effects.</strong> best around 0.6</figcaption>" in page


def test_markdown_links_pngs_and_escapes_table_pipes(tmp_path):
    md = render_markdown("Report", "sub", _sections(tmp_path))
    assert "![Marginal effects](effects.png)" in md and "*Marginal effects.* best around 0.6" in md
    assert "| `x\\|y` | 0.1235 |" in md and "```yaml\na: 1\n```" in md
    assert md.startswith("# Report\n") and "## Effects" in md


def test_fmt_cells():
    assert fmt(None) == "–" and fmt(float("nan")) == "–" and fmt(6) == "6" and fmt(True) == "True"
    assert fmt(1.5e-4) == "0.00015" and fmt("x") == "x"


def test_one_formatter_for_cells_and_bin_labels():
    assert fmt(6.0) == "6" and fmt(np.int64(3)) == "3" and fmt(np.float64(0.123456)) == "0.1235"
    assert fmt(0.123456, 3) == "0.123" and fmt(123456.0) == "123456" and fmt(2.5e6) == "2.5e+06"
    assert fmt(pd.NA) == "–" and fmt(np.bool_(True)) == "True" and fmt(float("inf")) == "inf"

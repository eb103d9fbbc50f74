"""The tournament section's tables, from a planted bracket: the recipes x rungs table, Kendall tau between
consecutive rungs (a flip said plainly) and the epochs line."""
from __future__ import annotations

import math

import pytest

from thoraxmae.analysis.tournament_section import (
    agreement_line,
    agreements,
    bracket_table,
    close_line,
    epochs_line,
)


def _s(recipe, mean, rank, kept, diff=0.0, low=0.0, high=0.0, close=False):
    return {"recipe": recipe, "index": 0, "scores": [mean, mean], "mean": mean, "rank": rank, "kept": kept,
            "diff_to_leader": diff, "ci_low": low, "ci_high": high, "close": close}


BRACKET = {
    "recipes": ["A", "B", "C", "D"], "pretrain_epochs": 8, "full_epochs": 16, "one_epochs": 4, "winner": "B",
    "rungs": [
        {"epochs": 1, "standings": [_s("A", 0.70, 1, True), _s("B", 0.69, 2, True, -0.01, -0.03, 0.01),
                                    _s("C", 0.68, 3, False, -0.02, -0.05, 0.01, close=True),
                                    _s("D", 0.60, 4, False, -0.10, -0.12, -0.08)]},
        {"epochs": 2, "standings": [_s("B", 0.72, 1, True), _s("A", 0.71, 2, False, -0.01, -0.02, 0.0)]},
        {"epochs": 4, "standings": [_s("B", 0.73, 1, True)]},
    ]}


def test_bracket_table_has_a_column_per_scored_rung():
    t = bracket_table(BRACKET)
    assert t.header == ["recipe", "rung 1 ep", "rung 2 ep", "rung 4 ep"]
    rows = {r[0]: r[1:] for r in t.rows}
    assert rows["`A`"] == ["0.7000, kept", "0.7100 (Δ -0.0100, CI -0.0200 to +0.0000), dropped", ""]
    assert rows["`C`"][0] == "0.6800 (Δ -0.0200, CI -0.0500 to +0.0100), dropped, close"
    assert rows["`D`"][1:] == ["", ""]


def test_kendall_tau_between_rungs_and_flips_said_plainly():
    g12, g24 = agreements(BRACKET)
    assert (g12.rung_a, g12.rung_b, g12.n) == (1, 2, 2) and g12.tau == pytest.approx(-1.0)
    assert g12.flipped == [("A", "B")]
    assert "Kendall tau = -1.00 over 2 recipes. **The ranking flipped**" in agreement_line(g12)
    assert g24.n == 1 and math.isnan(g24.tau) and "only 1 recipe scored at both" in agreement_line(g24)
    assert epochs_line(BRACKET) == ("Pre-training epochs spent: **8**, against 16 for every recipe taken to "
                                    "4 epochs (2.00x more) and 4 for one pre-training (2.00x one).")


def test_cuts_within_noise_are_counted():
    assert close_line(BRACKET).startswith("**1 cut(s) within noise**: `C` at 1 epochs")

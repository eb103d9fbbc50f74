"""`search.tournament`: pre-training recipes compared at the paper's length by successive halving over
pre-training epochs (study/run/tournament.py runs it; docs/architecture.md "Recipe tournament").

    search:
      tournament:
        rungs: [50, 100, 200, 400, 800]   # pre-training epochs; the last is pretrain.epochs
        keep: 0.5                          # ceil(keep x n) recipes go on to the next rung
        scoring: {trials: 3, epochs: 8, seed: 1000}   # k complete, paired fine-tunes per recipe and rung

This module only declares the section (the spec model imports it); study/spec/tournament_plan.py checks it and
derives the recipes, the paired scoring points and the bracket's epochs from a spec.
"""
from __future__ import annotations

from pydantic import Field

from thoraxmae.datasets.config import ConfigModel


class ScoringConfig(ConfigModel):
    trials: int = Field(3, description="k: complete fine-tunes per recipe and rung (never stopped early)")
    epochs: int | None = Field(None, ge=1, description="each scoring fine-tune's epochs (default "
                                                       "finetune.epochs)")
    seed: int = Field(1000, ge=0, description="the j-th scoring fine-tune uses seed + j; also draws the "
                                              "configs")


class TournamentConfig(ConfigModel):
    rungs: list[int] = Field(description="pre-training epochs at which recipes are scored and cut; "
                             "increasing, the last = pretrain.epochs")
    keep: float = Field(0.5, description="fraction of the recipes kept at each cut (ceil(keep x n))")
    scoring: ScoringConfig = ScoringConfig()

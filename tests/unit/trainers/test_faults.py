"""The test-only fault seam (trainers.faults): `fail` entries, and the once-only form that fails one run."""
from __future__ import annotations

import pytest

from thoraxmae.trainers import faults


def test_a_fail_entry_raises_in_its_phase_and_epoch_unless_restored():
    spec = faults.fail_entry("finetune", 2)
    faults.fail("finetune", 1, restored=False, spec=spec)
    faults.fail("pretrain", 2, restored=False, spec=spec)
    faults.fail("finetune", 2, restored=True, spec=spec)
    with pytest.raises(faults.InjectedFailure, match="finetune epoch 2"):
        faults.fail("finetune", 2, restored=False, spec=spec)
    with pytest.raises(faults.InjectedFailure):  # every run that gets there
        faults.fail("finetune", 2, restored=False, spec=spec)


def test_a_once_only_fail_entry_fails_the_first_run_only(tmp_path):
    spec = faults.fail_entry("*", 1, once_in=tmp_path / "claims")
    with pytest.raises(faults.InjectedFailure, match="pretrain epoch 1"):
        faults.fail("pretrain", 1, restored=False, spec=spec)
    faults.fail("pretrain", 1, restored=False, spec=spec)  # claimed: the next run goes on
    with pytest.raises(faults.InjectedFailure):  # its own claim per phase
        faults.fail("finetune", 1, restored=False, spec=spec)
    assert sorted(p.name for p in (tmp_path / "claims").iterdir()) == ["fail-finetune-1", "fail-pretrain-1"]

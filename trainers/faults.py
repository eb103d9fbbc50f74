"""Test-only fault injection: the one seam through which tests/reliability makes a run fail or pause at an
exact moment. Nothing here acts unless $THORAXMAE_FAULTS is set, and no public config or job schema
carries a fault. Not for users: a held run waits for a file to disappear.

THORAXMAE_FAULTS holds `;`-separated entries:
- `fail:<phase>:<epoch>`: that phase's worker raises once in that epoch, only in a run that did not start
  from a checkpoint (so Ray Train's retry, resumed from the checkpoint, passes);
- `fail:<phase>:<epoch>:<folder>`: the same, but only in the first run to get there (it claims
  `<folder>/fail-<phase>-<epoch>`): one trial of a study fails, the others go on;
- `hold:<point>:<phase>:<epoch>:<folder>`: write `<folder>/<point>` there and wait until the file is removed
  (at most HOLD_LIMIT_S), so a test can kill the study at exactly that moment. Points: `worker` (rank 0, an
  epoch done, before its report and checkpoint) and `forward` (study.run.trial: a Train checkpoint recorded,
  before its report is forwarded to Tune). `<phase>` matches a phase name or the end of a Train run name
  (`train-<trial>-<phase>`); `*` matches any.

`fail` entries are read where a trainer is built (trainers.api puts them beside the job in the train loop
config, so the workers of a Ray started earlier see them); `hold` entries in the process that holds.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
ENV = "THORAXMAE_FAULTS"
CONFIG_KEY = "faults"  # the train loop config's key beside "job" (trainers.api)
HOLD_LIMIT_S = 600.0


class InjectedFailure(RuntimeError):
    """Raised by a `fail` entry."""


def active() -> str:
    return os.environ.get(ENV, "")


def env(*entries: str) -> dict[str, str]:
    """The environment that activates `entries` (see `fail_entry`, `hold_entry`)."""
    return {ENV: ";".join(entries)}


def fail_entry(phase: str, epoch: int, once_in: Path | str | None = None) -> str:
    """A `fail` entry; with `once_in` (a folder), only the first run to reach it fails."""
    return f"fail:{phase}:{epoch}" + (f":{once_in}" if once_in else "")


def _claim(folder: str, phase: str, epoch: int) -> bool:
    """True for the first caller (any process) to claim this failure in `folder`."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(Path(folder) / f"fail-{phase}-{epoch}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def hold_entry(point: str, phase: str, epoch: int, folder: Path | str) -> str:
    return f"hold:{point}:{phase}:{epoch}:{folder}"


def _entries(kind: str, spec: str | None) -> list[list[str]]:
    text = active() if spec is None else spec
    out = []
    for entry in filter(None, text.split(";")):
        head, _, rest = entry.partition(":")
        if head == kind:
            out.append(rest.split(":", 3 if kind == "hold" else 2))
    return out


def _phase_matches(want: str, phase: str) -> bool:
    return want in ("*", phase) or phase.endswith(f"-{want}")


def fail(phase: str, epoch: int, restored: bool, spec: str | None = None) -> None:
    """Raise InjectedFailure when a `fail` entry names this phase and epoch of a run not restored."""
    if restored:
        return
    for want_phase, want_epoch, *once_in in (e for e in _entries("fail", spec) if len(e) in (2, 3)):
        if not (_phase_matches(want_phase, phase) and want_epoch.isdigit() and int(want_epoch) == epoch):
            continue
        if not once_in or _claim(once_in[0], phase, epoch):
            raise InjectedFailure(f"injected failure in {phase} epoch {epoch} ({ENV})")


def hold(point: str, phase: str, epoch: Any, spec: str | None = None) -> None:
    """Wait at this point, phase and epoch when a `hold` entry names them (see the module docstring)."""
    if epoch is None:
        return
    for entry in _entries("hold", spec):
        if len(entry) != 4:
            continue
        w_point, w_phase, w_epoch, folder = entry
        if w_point != point or not w_epoch.isdigit() or int(w_epoch) != int(epoch) or not folder:
            continue
        if not _phase_matches(w_phase, phase):
            continue
        flag = Path(folder) / point
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.write_text(f"{phase} {epoch} {os.getpid()}\n")
        log.warning("test hold at %s (%s, epoch %s): waiting until %s is removed", point, phase, epoch, flag)
        deadline = time.monotonic() + HOLD_LIMIT_S
        while flag.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

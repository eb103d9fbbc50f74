"""Tune's state of a study on storage: checked before `study resume` starts Ray, kept whole, restored from.

Tune restores a study from the files at the top of its folder: `tuner.pkl`, written once when the study
starts, and the newest file of each kind written at every sync (`experiment_state-<session>.json`: the trials;
`searcher-state-<session>.pkl`, `search_gen_state-<session>.json`: the search). When one of them cannot be
read, Tune logs "Failed to restore the run state", starts the study over and runs num_samples new trials
beside the old ones ('Restarting experiment'): what a disk that filled up mid-sync used to do. So:

- `check_state` reads those files before Ray (a pickle is parsed opcode by opcode, never loaded; JSON is
  parsed) and stops `study resume` with one line naming the damaged file and the way back, before any trial;
- `StateKeeper` keeps the last good copy of them as one zip (StudyStorage.last_good_state), written in one
  atomic step from the driver's heartbeat and when the study ends, when the files are whole and of one sync
  (written within SYNC_SPREAD_S of each other: not the searcher of one sync with the trials of the next). Good
  means whole and written or restored by Tune in this driver: the keeper is
  armed when a new study starts, and for a resumed one only once Tune has restored every trial of it
  (study.run.tune.RestoreGuard), so a state Tune cannot restore never replaces the copy;
- `restore_last_good` (`study resume --from-last-good`) puts the damaged files aside (StudyStorage.
  damaged_state: nothing is deleted) and the kept copy in their place. The trials run since that copy was
  made are found in MLflow and their runs end `failed` (study.tracking.callback.drop_forgotten_trials); their
  recipes are sampled again.
No Ray here: the CLI calls it before Ray starts.
"""
from __future__ import annotations

import io
import json
import logging
import pickletools
import re
import zipfile
from dataclasses import dataclass, field
from datetime import datetime

from thoraxmae.datasets.storage import Location
from thoraxmae.study.errors import SpecError
from thoraxmae.study.spec.model import StudySpec
from thoraxmae.study.storage import StudyStorage

log = logging.getLogger(__name__)

TUNER_FILE = "tuner.pkl"
EXPERIMENT_KIND = "experiment_state"
SESSION_FILE = re.compile(r"(?P<kind>.+)-(?P<session>\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)\.(?:json|pkl)")
STATE_SUFFIXES = (".json", ".pkl")  # what Tune copies from the folder to restore it
ABOUT = "thoraxmae_saved.json"  # in the zip: when the copy was made, how many trials it holds
SYNC_SPREAD_S = 5.0  # the files of one Tune sync are written within this many seconds of each other


@dataclass
class TuneState:
    """The files Tune restores a study from, as found in its folder: {name: bytes}."""

    folder: Location
    files: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Location) -> TuneState:
        return cls(folder, {loc.name: loc.read_bytes() for loc in current_files(folder)})

    def problem(self) -> tuple[str, str] | None:
        """(file name, what is wrong) for the first file Tune could not restore from, or None."""
        if TUNER_FILE not in self.files:
            return TUNER_FILE, "missing"
        if not any(SESSION_FILE.fullmatch(n) and n.startswith(EXPERIMENT_KIND) for n in self.files):
            return f"{EXPERIMENT_KIND}-*.json", "missing"
        for name in sorted(self.files, key=lambda n: n != TUNER_FILE):
            why = damage(name, self.files[name])
            if why:
                return name, why
        return None

    def trials(self) -> int:
        """How many trials the newest experiment state holds (0 when it cannot be read)."""
        for name, data in self.files.items():
            if name.startswith(EXPERIMENT_KIND) and name.endswith(".json"):
                try:
                    return len(json.loads(data)["trial_data"])
                except (ValueError, KeyError, TypeError):
                    return 0
        return 0


def current_files(folder: Location) -> list[Location]:
    """tuner.pkl and the newest file of each session kind in `folder`: what Tune's restore reads."""
    newest: dict[str, Location] = {}
    found = []
    for loc in folder.iterdir():
        m = SESSION_FILE.fullmatch(loc.name)
        if m:
            kind = m["kind"] + loc.name[-5:]  # experiment_state.json, searcher-state.pkl, ...
            if kind not in newest or loc.name > newest[kind].name:  # Tune takes the greatest name
                newest[kind] = loc
        elif loc.name == TUNER_FILE:
            found.append(loc)
    return found + sorted(newest.values(), key=lambda loc: loc.name)


def damage(name: str, data: bytes) -> str | None:
    """Why a state file cannot be read (cut short, not JSON, not a pickle), or None. The experiment state is
    JSON; the other files are JSON or a pickle (Tune writes search_gen_state-*.json as a pickle), told apart
    by
    the pickle's first byte. A pickle is parsed opcode by opcode (pickletools), never loaded: nothing runs."""
    if not data:
        return "empty"
    is_json = name.startswith(EXPERIMENT_KIND) or not data.startswith(b"\x80")  # a pickle starts with 0x80
    if name.endswith(".json") and is_json:
        try:
            state = json.loads(data)
        except ValueError as exc:
            return f"not complete JSON: {exc}"
        whole = (isinstance(state, dict) and isinstance(state.get("trial_data"), list)
                 and isinstance(state.get("runner_data"), dict))
        if name.startswith(EXPERIMENT_KIND) and not whole:
            return "not a Tune experiment state (no trial_data/runner_data)"
        return None
    try:
        ops = list(pickletools.genops(data))
    except ValueError as exc:  # an unknown opcode, bytes cut short, bad text in an argument
        return f"not a whole pickle: {exc}"
    if not ops or ops[-1][0].name != "STOP" or ops[-1][2] != len(data) - 1:
        return "not a whole pickle: bytes after its end"
    return None


def check_state(spec: StudySpec) -> TuneState:
    """Before `study resume` starts Ray: Tune's state of the study is whole; SpecError naming the damaged
    file, that nothing ran, and how to go on (the kept copy, or what to do without one)."""
    storage = StudyStorage(spec.storage_path)
    state = TuneState.read(storage.study(spec.name))
    problem = state.problem()
    if problem is None:
        return state
    name, why = problem
    raise SpecError(f"study `{spec.name}`: Tune's state file {name} in {state.folder} is damaged ({why}); "
                    f"nothing was run. {way_back(spec)}")


def way_back(spec: StudySpec) -> str:
    """How to go on when Tune's state of the study cannot be restored (one sentence or two)."""
    kept = read_kept(StudyStorage(spec.storage_path).last_good_state(spec.name))
    remove = (f"`thoraxmae study remove {spec.name} --tracking-uri {spec.tracking.uri} --storage-path "
              f"{spec.storage_path} --yes`")
    if kept is None:
        return ("No whole copy of it was kept: the study cannot be resumed. Its runs stay in MLflow; start "
                f"it again under another name, or delete it with {remove}")
    return (f"The last whole state ({kept['trials']} trial(s), saved {kept['saved']}) is kept in "
            f"{StudyStorage(spec.storage_path).last_good_state(spec.name)}: resume from it with `thoraxmae "
            f"study resume {spec.name} --tracking-uri {spec.tracking.uri} --from-last-good` (the damaged "
            "files are put aside; trials run since then are run again)")


def read_kept(loc: Location) -> dict | None:
    """The kept copy at `loc`: {"saved", "trials", "files": {name: bytes}}, or None (none, or unreadable)."""
    try:
        data = loc.read_bytes()
    except FileNotFoundError:
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            about = json.loads(z.read(ABOUT))
            files = {n: z.read(n) for n in about["files"]}
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        log.warning("%s: not a whole copy of Tune's state (%s)", loc, exc)
        return None
    if any(damage(n, b) for n, b in files.items()):
        return None
    return {**about, "files": files}


class StateKeeper:
    """Keeps the last whole copy of a study's Tune state (see the module docstring). `snapshot` is cheap when
    nothing changed: one listing of the folder."""

    def __init__(self, storage_path, name: str):
        storage = StudyStorage(storage_path)
        self.folder, self.target = storage.study(name), storage.last_good_state(name)
        self.armed = False  # Tune wrote (new study) or restored (resumed study) the state: copies may be made
        self._saved: tuple | None = None  # the files' (name, size, mtime) when the kept copy was written

    def arm(self) -> None:
        self.armed = True

    def _signature(self) -> tuple:
        infos = ((loc.name, loc.fs.get_file_info(loc.fs_path)) for loc in current_files(self.folder))
        return tuple((name, info.size, info.mtime_ns) for name, info in infos)

    def snapshot(self) -> bool:
        """Write the copy when the state changed since the last one, is whole and of one sync (a sync in
        progress is not copied half-way). Returns whether it wrote."""
        if not self.armed:
            return False
        sig = self._signature()
        synced = [mtime for name, _, mtime in sig if name != TUNER_FILE]
        if not sig or sig == self._saved or not synced or (max(synced) - min(synced)) / 1e9 > SYNC_SPREAD_S:
            return False
        state = TuneState.read(self.folder)
        if state.problem() is not None:
            return False
        self.target.write_bytes(_zip(state))
        self._saved = sig
        log.debug("kept Tune's state of %s (%d trials) in %s", self.folder, state.trials(), self.target)
        return True

    def tick(self) -> None:
        """For the driver's heartbeat: a snapshot whose failure (a full disk) keeps the earlier copy."""
        try:
            self.snapshot()
        except OSError as exc:
            log.warning("Tune's state of %s not copied to %s (%s); the earlier copy stays", self.folder,
                        self.target, exc)


def _zip(state: TuneState) -> bytes:
    about = {"saved": datetime.now().strftime("%Y-%m-%d %H:%M:%S"), "trials": state.trials(),
             "files": sorted(state.files)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in sorted(state.files.items()):
            z.writestr(name, data)
        z.writestr(ABOUT, json.dumps(about, indent=1))
    return buf.getvalue()


def restore_last_good(spec: StudySpec) -> str:
    """`study resume --from-last-good`: Tune's state files put aside, the kept copy in their place. Returns a
    line for the console. SpecError when there is no copy, or the state is whole (nothing to restore)."""
    storage = StudyStorage(spec.storage_path)
    folder = storage.study(spec.name)
    kept = read_kept(storage.last_good_state(spec.name))
    if kept is None:
        raise SpecError(f"study `{spec.name}`: --from-last-good: no whole copy of Tune's state is kept in "
                        f"{storage.last_good_state(spec.name)}")
    if TuneState.read(folder).files == kept["files"]:
        raise SpecError(f"study `{spec.name}`: --from-last-good: Tune's state in {folder} is the kept copy "
                        f"already; resume without --from-last-good")
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    aside = storage.damaged_state(spec.name, stamp)
    for loc in folder.iterdir():  # every file Tune would read, whatever its session
        if loc.name.endswith(STATE_SUFFIXES) and not loc.is_dir():
            (aside / loc.name).write_bytes(loc.read_bytes())
            loc.unlink()
    for name, data in kept["files"].items():
        (folder / name).write_bytes(data)
    return (f"Tune's state of study `{spec.name}` restored from {storage.last_good_state(spec.name)} (saved "
            f"{kept['saved']}, {kept['trials']} trial(s)); the damaged files are in {aside}")

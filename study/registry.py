"""Pre-training registry: every pre-training recipe is pre-trained once per storage and then reused.

A pre-training result is identified by a key over everything that decides it: the model geometry, the
pre-training config after the trial's knobs (minus bookkeeping such as `checkpoint_every`), the number
of workers (the global batch sets the LR), the data config, the store's content hash and `KEY_VERSION`
(bumped when the pre-training code changes what a checkpoint means). The registry lives beside the
studies, `<storage_path>/pretrain-registry/<key>/`, so studies that share a storage share it (a local
folder or an object store, always read and written through datasets.storage.Location):

    key.json      what the key covers (human-readable)
    pretrain/     the Ray Train run of that pre-training (checkpoints; a killed one resumes from here)
    entry.json    written once it finished: the checkpoint, its last metrics, its cost, who ran it

Two trials of one study that need the same key at once do the work once: a `PretrainCoordinator`
actor (one per study driver) grants the key to one trial, the others wait for its `entry.json`. The
grant is a lease the holder renews; a holder that died without releasing it loses it after
`LEASE_S`, and the next trial resumes the half-done Train run from its checkpoint. A finished entry
whose checkpoint is missing or damaged is discarded with a warning and pre-trained again (on an object
store "damaged" means a size other than the recorded one: the check must not download GB-sized files).
Across studies on one storage the same holds through the key's storage lease, `<key>/lease.json`, which
every driver honours: the trial its study's coordinator granted the key takes the lease with an exclusive
create (a local or shared folder) or, on an object store (no conditional write through pyarrow), by
writing its record and reading it back `CLAIM_WINDOW_S` later (of two claims inside that window the
last writer wins: the documented bound). It renews the lease with the coordinator's grant; a lease not
renewed for `LEASE_S` is stale and taken over (the half-done run resumes from its checkpoint).
See docs/architecture.md ("Pipeline studies").
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import logging
import threading
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

from thoraxmae.datasets.storage import Location, as_config
from thoraxmae.study.errors import SpecError
from thoraxmae.study.storage import StudyStorage

log = logging.getLogger(__name__)
KEY_VERSION = 2  # 2: resolved model, code version, horizon-free keys without their length
KEY_FILE = "key.json"
ENTRY_FILE = "entry.json"
# the Train run's name (it ends like every pre-training run: `...-pretrain` / `pretrain`)
RUN_NAME = "pretrain"
REF_PREFIX = "registry:"  # finetune.init: registry:<key or unique key prefix>
LEASE_S = 60.0
LEASE_FILE = "lease.json"  # <key>/lease.json: which study and trial pre-trains the key now (across studies)
CLAIM_WINDOW_S = 2.0  # object stores: a claim is read back this long after it is written
# Fields that do not change the weights a pre-training produces (`continue_from`: where it resumed from).
NOT_IN_KEY = frozenset({"checkpoint_every", "continue_from"})
MODEL_NOT_IN_KEY = frozenset({"global_pool"})
DATA_NOT_IN_KEY = frozenset({"store", "num_workers", "val_split", "test_split"})
EPOCHS_SEP = "-e"
# The modules whose code decides pre-trained weights (hashed into every key by code_version).
CODE_MODULES = ("thoraxmae.trainers.pretrain", "thoraxmae.trainers.engine", "thoraxmae.trainers.optim",
                "thoraxmae.trainers.session", "thoraxmae.trainers.runtime", "thoraxmae.trainers.continuation",
                "thoraxmae.trainers.models", "thoraxmae.datasets.transforms", "thoraxmae.datasets.loader")


@dataclass(frozen=True)
class PretrainEntry:
    """A finished, registered pre-training."""

    key: str
    checkpoint: str  # the final checkpoint.pt: a local absolute path or a URI
    metrics: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)  # study, trial_id, mlflow run id, finished_at
    recipe: dict[str, Any] = field(default_factory=dict)  # the pre-training config of the key
    history: list[dict[str, Any]] = field(default_factory=list)  # its epochs' results, as forwarded to Tune
    checkpoint_bytes: int | None = None  # its size when recorded (None in entries older than the field)


def store_content_hash(store: Path | str) -> str:
    """The prepared store's content hash (its manifest's), so a rebuilt store gives new keys."""
    if not Location.of(store).is_local:  # an object-store URI: its remote manifest
        from thoraxmae.datasets.errors import DataError
        from thoraxmae.datasets.remote import read_manifest_uri

        try:
            return str(read_manifest_uri(str(store))["content_hash"])
        except (DataError, KeyError) as exc:
            raise SpecError(f"{store}: cannot read the store's content hash ({exc})") from None
    manifest = Path(store) / "manifest.json"
    try:
        return str(json.loads(manifest.read_text())["content_hash"])
    except (OSError, ValueError, KeyError) as exc:
        raise SpecError(f"{manifest}: cannot read the store's content hash ({exc})") from None


def key_payload(model: Any, data: Any, pretrain: Any, workers: int) -> dict[str, Any]:
    """Everything that decides a pre-training's weights, as plain JSON (pydantic configs in), and nothing
    else: the model as resolved from its preset (writing a preset's value out gives the same key) without
    `global_pool` (fine-tuning only), the data config without the splits pre-training never reads, the
    pre-training config without bookkeeping and, for a horizon-free (constant) schedule, without its
    length: such a key's entries are the epochs it reached (`entry_id`). `code` changes when the training
    code does."""
    from thoraxmae.trainers.models.presets import resolve_model

    resolved = {k: v for k, v in asdict(resolve_model(model)).items() if k not in MODEL_NOT_IN_KEY}
    data_json = data.model_dump(mode="json", exclude=set(DATA_NOT_IN_KEY))
    omit = set(NOT_IN_KEY) | ({"epochs"} if horizon_free(pretrain) else set())
    return {"version": KEY_VERSION, "code": code_version(), "model": resolved, "workers": int(workers),
            "pretrain": pretrain.model_dump(mode="json", exclude=omit), "data": data_json,
            "store_hash": store_content_hash(data.store)}


def horizon_free(pretrain: Any) -> bool:
    """A constant schedule: its checkpoint at epoch e does not depend on the planned length
    (trainers.continuation)."""
    return getattr(pretrain, "schedule", "cosine") == "constant"


def entry_id(key: str, pretrain: Any) -> str:
    """The registry folder of a pre-training: its key, and for a horizon-free key the epochs reached
    (`<key>-e<n>`)."""
    return f"{key}{EPOCHS_SEP}{pretrain.epochs}" if horizon_free(pretrain) else key


def entry_epochs(name: str, key: str) -> int | None:
    """n when the folder `name` is `<key>-e<n>`, else None."""
    tail = name.removeprefix(f"{key}{EPOCHS_SEP}")
    return int(tail) if name != tail and tail.isdigit() else None


@functools.cache
def code_version() -> str:
    """A hash of the code that decides pre-trained weights (CODE_MODULES), docstrings and comments left out
    (parsed with `ast`), so a change to the training code gives new keys and a change to its prose does
    not."""
    digest = hashlib.sha256()
    for name in CODE_MODULES:
        spec = importlib.util.find_spec(name)
        paths = sorted(Path(p) for p in spec.submodule_search_locations for p in Path(p).glob("*.py")) \
            if spec.submodule_search_locations else [Path(spec.origin)]
        for path in paths:
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                body = getattr(node, "body", None)
                if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                        and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                    node.body = body[1:] or [ast.Pass()]
            digest.update(path.name.encode() + ast.dump(tree).encode())
    return digest.hexdigest()[:12]


def pretrain_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


class Registry:
    """The registry folder of one storage path (a local folder or an object-store URI)."""

    def __init__(self, storage_path: Location | Path | str):
        self.root = StudyStorage(storage_path).registry

    def folder(self, key: str) -> Location:
        return self.root / key

    def run_dir(self, key: str) -> Location:
        return self.folder(key) / RUN_NAME

    def prepare(self, key: str, payload: dict[str, Any]) -> Location:
        folder = self.folder(key)
        folder.mkdir()
        if not (folder / KEY_FILE).is_file():
            _write_json(folder / KEY_FILE, payload)
        return folder

    def lookup(self, key: str, verify: bool = True) -> PretrainEntry | None:
        """The finished entry of key, or None. With `verify` (reading the whole local checkpoint; an object's
        existence and size), a damaged or missing checkpoint discards the entry (warning); without, only the
        entry's own record is read."""
        path = self.folder(key) / ENTRY_FILE
        if not path.is_file():
            return None
        try:
            entry = PretrainEntry(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            return self._discard(key, f"its {ENTRY_FILE} is unreadable ({exc})")
        problem = checkpoint_problem(entry.checkpoint, entry.checkpoint_bytes) if verify else None
        if problem:
            return self._discard(key, problem)
        return entry

    def claim(self, key: str, holder: dict[str, Any], now: float | None = None) -> dict[str, Any] | None:
        """Take the key's storage lease for `holder` (its study and trial); None when taken, else the record
        of
        the live holder from another study or trial (see the module docstring)."""
        loc = self.folder(key) / LEASE_FILE
        now = time.time() if now is None else now
        mine = {**holder, "renewed_at": now}
        current = _read_lease(loc)
        if current is not None and _same(current, holder):
            _write_json(loc, mine)  # ours already (a restarted trial): renew
            return None
        if current is not None and now - float(current.get("renewed_at", 0)) < LEASE_S:
            return current
        if loc.is_local:
            if current is None and loc.path.exists():  # being written, or half-written by a writer that died
                if now - loc.path.stat().st_mtime < LEASE_S:
                    return {"study": "?", "trial_id": "?"}
                loc.path.unlink(missing_ok=True)
            if current is not None:  # stale: its holder died; take it over
                log.warning("pre-training %s: lease of %s not renewed for %.0f s; taking it over", key,
                            _who(current), now - float(current.get("renewed_at", 0)))
                loc.path.unlink(missing_ok=True)
            loc.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(loc.path, "x", encoding="utf-8") as f:  # exclusive: one creator wins
                    json.dump(mine, f)
            except FileExistsError:
                return _read_lease(loc) or {"study": "?", "trial_id": "?"}
            return None
        _write_json(loc, mine)
        time.sleep(CLAIM_WINDOW_S)
        after = _read_lease(loc)
        return None if after is not None and _same(after, holder) else after

    def renew(self, key: str, holder: dict[str, Any]) -> None:
        loc = self.folder(key) / LEASE_FILE
        current = _read_lease(loc)
        if current is None or _same(current, holder):
            _write_json(loc, {**holder, "renewed_at": time.time()})

    def release(self, key: str, holder: dict[str, Any]) -> None:
        loc = self.folder(key) / LEASE_FILE
        current = _read_lease(loc)
        if current is not None and _same(current, holder):
            try:
                loc.unlink()
            except OSError as exc:  # it goes stale by itself
                log.warning("pre-training %s: lease not released (%s)", key, exc)

    def record(self, key: str, checkpoint: str, metrics: dict[str, Any], source: dict[str, Any],
               history: list[dict[str, Any]] | None = None) -> PretrainEntry:
        cost = {k: float(v) for k, v in metrics.items() if "cost/" in k and isinstance(v, int | float)}
        recipe = {}
        key_file = self.folder(key) / KEY_FILE
        if key_file.is_file():
            recipe = json.loads(key_file.read_text()).get("pretrain", {})
        ckpt = Location.of(checkpoint)
        entry = PretrainEntry(key=key, checkpoint=checkpoint, metrics=_jsonable(metrics), cost=cost,
                              source={**source, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")},
                              recipe=recipe,
                              history=[_jsonable(h) for h in history or []],
                              checkpoint_bytes=ckpt.size() if ckpt.is_file() else None)
        _write_json(self.folder(key) / ENTRY_FILE, asdict(entry))
        return entry

    def latest(self, key: str, at_most: int) -> tuple[int, PretrainEntry] | None:
        """The finished entry of the horizon-free `key` with the most epochs <= at_most, as (epochs,
        entry)."""
        if not self.root.is_dir():
            return None
        found = sorted((n, p.name) for p in self.root.iterdir()
                       if (n := entry_epochs(p.name, key)) is not None and n <= at_most)
        for n, name in reversed(found):
            entry = self.lookup(name)
            if entry is not None:
                return n, entry
        return None

    def entries(self) -> list[PretrainEntry]:
        found = (self.lookup(p.name) for p in self.root.iterdir() if (p / ENTRY_FILE).is_file())
        return [e for e in found if e is not None]

    def resolve(self, ref: str) -> PretrainEntry:
        """`registry:<key or unique prefix>` -> its finished entry (SpecError otherwise)."""
        prefix = ref.removeprefix(REF_PREFIX)
        matches = [p.name for p in self.root.iterdir() if p.name.startswith(prefix)] if prefix else []
        if len(matches) != 1:
            known = ", ".join(e.key for e in self.entries()) or "none"
            what = "matches no" if not matches else f"matches {len(matches)}"
            raise SpecError(f"finetune.init: {ref!r} {what} registered pre-training in {self.root} "
                            f"(registered: {known})")
        entry = self.lookup(matches[0])
        if entry is None:
            raise SpecError(f"finetune.init: pre-training {matches[0]} in {self.root} has not finished")
        return entry

    def _discard(self, key: str, why: str) -> None:
        log.warning("pre-training %s in %s: %s; discarding it, it will be pre-trained again", key, self.root,
                    why)
        try:
            self.folder(key).rmtree()
        except OSError as exc:  # gone already, or not ours to delete: the next pre-training overwrites it
            log.warning("pre-training %s: cannot delete %s (%s)", key, self.folder(key), exc)


def resolve_init(storage_path: Location | Path | str, init: Path | str | None) -> Path | str | None:
    """`finetune.init` as a file: `registry:<key or prefix>` becomes that pre-training's checkpoint.
    A local file comes back as a Path, an object-store one as its URI (never a Path, which would fold
    `s3://`)."""
    if init is not None and str(init).startswith(REF_PREFIX):
        init = Registry(storage_path).resolve(str(init)).checkpoint
    return None if init is None else as_config(init)


def checkpoint_problem(checkpoint: str, expected_bytes: int | None = None) -> str | None:
    """Why a registered checkpoint cannot be used, or None. A local file: missing, empty, damaged zip. An
    object: missing, or a size other than `expected_bytes` (the size recorded) -- it is not downloaded."""
    loc = Location.of(checkpoint)
    if not loc.is_local:
        if not loc.is_file():
            return f"checkpoint {checkpoint} is missing"
        size = loc.size()
        if expected_bytes is not None and size != expected_bytes:
            return f"checkpoint {checkpoint} is damaged ({size} bytes, {expected_bytes} recorded)"
        return None
    path = Path(checkpoint)
    if not path.is_file():
        return f"checkpoint {path} is missing"
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (OSError, zipfile.BadZipFile) as exc:
        return f"checkpoint {path} is damaged ({exc})"
    return f"checkpoint {path} is damaged (CRC error in {bad})" if bad else None


def _read_lease(loc: Location) -> dict[str, Any] | None:
    try:
        data = json.loads(loc.read_text())
    except (OSError, ValueError):  # none, or half-written by a writer that died: no lease
        return None
    return data if isinstance(data, dict) else None


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a.get("study"), a.get("trial_id")) == (b.get("study"), b.get("trial_id"))


def _who(lease: dict[str, Any]) -> str:
    return f"study {lease.get('study')} (trial {lease.get('trial_id')})"


def _write_json(loc: Location, data: dict[str, Any]) -> None:
    loc.write_text(json.dumps(data, indent=1, sort_keys=True))  # whole or not at all (Location.write_bytes)


def _jsonable(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, str | int | float | bool) or v is None}


# --- coordination inside one study (Ray actor, created by the study driver) ---------------------------------

def coordinator_name(study: str) -> str:
    return f"thoraxmae-pretrain-{study}"


class _Coordinator:
    """Grants each key to one trial at a time; a grant is a lease the holder renews."""

    def __init__(self, lease_s: float = LEASE_S):
        self.lease_s = lease_s
        self.holders: dict[str, tuple[str, float]] = {}  # key -> (trial id, lease expiry)
        self.runs: dict[str, str] = {}  # key -> MLflow run id of its pre-training

    def claim(self, key: str, trial_id: str) -> str:
        """The trial that holds key after this call (trial_id if it was free or its lease ran out)."""
        holder = self.holders.get(key)
        now = time.monotonic()
        if holder is None or holder[0] == trial_id or holder[1] < now:
            self.holders[key] = (trial_id, now + self.lease_s)
            return trial_id
        return holder[0]

    def release(self, key: str, trial_id: str) -> None:
        if self.holders.get(key, ("",))[0] == trial_id:
            del self.holders[key]

    def pretrain_run(self, key: str, run_id: str | None = None) -> str | None:
        """The key's MLflow pre-training run id (set it when given and unset)."""
        if run_id is not None:
            self.runs.setdefault(key, run_id)
        return self.runs.get(key)


def start_coordinator(study: str):
    """The study's coordinator actor (named, owned by the driver, gone with it)."""
    import ray

    actor = ray.remote(num_cpus=0)(_Coordinator)
    return actor.options(name=coordinator_name(study), get_if_exists=True).remote()


class Lease:
    """Holds a key's grant while the pre-training runs: renews it from a thread, releases it at the end."""

    def __init__(self, coordinator, key: str, trial_id: str, every_s: float = LEASE_S / 4,
                 registry: Registry | None = None, holder: dict[str, Any] | None = None):
        self.coordinator, self.key, self.trial_id, self.every_s = coordinator, key, trial_id, every_s
        # the storage lease, renewed and released with the grant
        self.registry, self.holder = registry, holder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        self._stop.set()
        if self.registry is not None and self.holder is not None:
            self.registry.release(self.key, self.holder)
        ray.get(self.coordinator.release.remote(self.key, self.trial_id))

    def _renew(self) -> None:
        import ray

        while not self._stop.wait(self.every_s):
            ray.get(self.coordinator.claim.remote(self.key, self.trial_id))
            if self.registry is not None and self.holder is not None:
                try:
                    self.registry.renew(self.key, self.holder)
                except OSError as exc:  # storage unreachable for a moment: the next tick retries
                    log.warning("pre-training %s: lease not renewed (%s)", self.key, exc)

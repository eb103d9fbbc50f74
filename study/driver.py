"""One live driver per study: the driver's record on the study's storage, its heartbeat, and the check that
`study run` and `study resume` make before Ray starts.

A driver (the `study run`/`resume` process that runs Tune) writes its record (StudyStorage.driver) before Ray
starts: host, boot, pid and the pid's start time, the command, when it started, and a heartbeat that a thread
rewrites every HEARTBEAT_S seconds while it runs. The record is deleted when the driver ends, by an error too;
only a driver killed outright (kill -9, a lost node) leaves it. It lives on the study's storage, local folder
or object store, so every node that could start a driver of the study sees it.

Another driver of the same study is refused in one line that names the live one:
- a heartbeat younger than STALE_S: always refused, `--force` included. A driver that beats is running; its
  heartbeat goes stale STALE_S after it dies;
- a record of this machine (same host name, boot and pid namespace) whose process is gone, or whose pid now
  belongs to another process: that driver is known dead, and the new one takes over without `--force`;
- an older heartbeat from another machine: refused unless `--force`. A driver cut off from the storage stops
  beating but may still be running; whoever passes `--force` says its machine is dead.

Claiming: on a local (or shared) file system the record is created exclusively (O_EXCL; a dead driver's
record is renamed away first, so of two drivers taking over one can win). pyarrow offers object stores no
conditional write, so there the record is written and read back CLAIM_SETTLE_S later: of drivers that claim
within that window, the last writer runs and the others refuse. Node clocks are assumed synchronised (NTP):
a heartbeat's age is this node's clock minus the writer's.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Self

from thoraxmae.datasets.storage import Location
from thoraxmae.study.errors import SpecError
from thoraxmae.study.storage import StudyStorage

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
STALE_S = 60.0  # a heartbeat this old says the driver stopped (or lost the storage)
CLAIM_SETTLE_S = 2.0  # object stores: how long a claim is left before it is read back


@dataclass(frozen=True)
class DriverRecord:
    host: str
    machine: str  # boot id and pid namespace: the same host name on another boot or container is not this one
    pid: int
    pid_start: str  # the process's start time (Linux /proc): a reused pid is another process
    command: str  # study run | study resume
    started: float  # wall clock, seconds
    heartbeat: float
    token: str  # this claim's id: a driver that finds another token in the record was taken over

    @classmethod
    def mine(cls, command: str) -> DriverRecord:
        now = time.time()
        return cls(socket.gethostname(), _machine(), os.getpid(), _start_time(os.getpid()), command, now, now,
                   uuid.uuid4().hex)

    @classmethod
    def parse(cls, text: str) -> DriverRecord:
        raw = json.loads(text)
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__})

    def dumps(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    def age(self, now: float | None = None) -> float:
        return max(0.0, (time.time() if now is None else now) - self.heartbeat)

    def dead_because(self) -> str | None:
        """Why this driver is known dead (it ran on this machine and its process is gone), or None."""
        if self.host != socket.gethostname():
            return None
        if self.machine != _machine():
            return (f"{self.host} has restarted since"
                    if self.machine.split("/")[0] != _machine().split("/")[0]
                    else None)  # another container with this host name: its processes are not visible here
        if not _pid_alive(self.pid):
            return f"pid {self.pid} has exited"
        if self.pid_start and _start_time(self.pid) != self.pid_start:
            return f"pid {self.pid} has exited (it is another process now)"
        return None

    def describe(self, now: float | None = None) -> str:
        started = datetime.fromtimestamp(self.started).strftime("%Y-%m-%d %H:%M:%S")
        return (f"pid {self.pid} on {self.host} (`thoraxmae {self.command}`, started {started}, last "
                f"heartbeat {self.age(now):.0f} s ago)")


class DriverBusy(SpecError):
    """Another driver runs the study (or may): the message names it and what to do."""


def read_record(loc: Location) -> DriverRecord | None:
    """The record at `loc`, or None when there is none. A record that cannot be parsed (written by no
    thoraxmae, or damaged) names no driver: it is treated as absent, with a warning."""
    try:
        text = loc.read_text()
    except FileNotFoundError:
        return None
    try:
        return DriverRecord.parse(text)
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("%s: not a driver record (%s); ignoring it", loc, exc)
        return None


def verdict(name: str, record: DriverRecord | None, force: bool) -> str | None:
    """None when a new driver may run study `name` despite `record`; else raise DriverBusy. Returns a note
    on the dead driver taken over, for the console."""
    if record is None:
        return None
    dead = record.dead_because()
    if dead:
        return f"taking over study `{name}` from its dead driver {record.describe()}: {dead}"
    if record.age() < STALE_S:
        raise DriverBusy(f"study `{name}` is running: driver {record.describe()}; wait for it to end or stop "
                         f"it (kill {record.pid} on {record.host}). A second driver would run its trials "
                         "twice; --force takes over only a driver whose heartbeat is older than "
                         f"{STALE_S:.0f} s")
    if not force:
        raise DriverBusy(f"study `{name}` has a driver that stopped beating: {record.describe()}; if it is "
                         "dead (its machine is down or the process is gone), take over with --force")
    return f"taking over study `{name}` from driver {record.describe()} (--force)"


def check_driver(storage_path: Location | Path | str, name: str, force: bool = False) -> None:
    """Before anything else of `study run|resume`: the storage is usable (StudyStorage.check_writable: one
    line naming it otherwise), and DriverBusy when a live driver runs study `name`."""
    storage = StudyStorage(storage_path)
    storage.check_writable()
    verdict(name, read_record(storage.driver(name)), force)


class DriverLease:
    """This process's claim on a study: its record, a heartbeat thread (`start`), `release` at the end. Use
    `claim` to get one; a context manager releases it."""

    def __init__(self, loc: Location, name: str, record: DriverRecord, replaced: str | None):
        self.loc, self.name, self.record = loc, name, record
        self.replaced = replaced  # a note on the dead driver this claim took over, or None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ticks: list[Callable[[], None]] = []
        self.lost = False  # another driver took the study over (--force elsewhere)

    @classmethod
    def claim(cls, storage_path: Location | Path | str, name: str, command: str,
              force: bool = False) -> DriverLease:
        """Claim study `name` for this process, or raise DriverBusy naming the driver that has it."""
        loc = StudyStorage(storage_path).driver(name)
        for _ in range(3):  # a claim lost to a racing driver is decided again against the winner's record
            found = read_record(loc)
            note = verdict(name, found, force)
            mine = DriverRecord.mine(command)
            if _write_claim(loc, mine, found if found is not None or not loc.exists() else _UNREADABLE):
                return cls(loc, name, mine, note)
        raise DriverBusy(f"study `{name}`: other drivers keep claiming it; try again")

    def start(self, ticks: Iterable[Callable[[], None]] = ()) -> None:
        """Beat every HEARTBEAT_S seconds from a daemon thread; each beat then runs `ticks` (errors
        logged)."""
        self._ticks = list(ticks)
        self._thread = threading.Thread(target=self._run, name=f"thoraxmae-heartbeat-{self.name}",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.beat()
                failing = False
            except OSError as exc:
                if not failing:
                    log.warning("study %s: heartbeat not written to %s (%s); retrying every %.0f "
                                "s", self.name,
                                self.loc, exc, HEARTBEAT_S)
                failing = True
            if self.lost:
                return
            for tick in self._ticks:
                try:
                    tick()
                except Exception:  # a tick must not stop the heartbeat
                    log.warning("study %s: %s failed", self.name, getattr(tick, "__qualname__", tick),
                                exc_info=True)

    def beat(self) -> None:
        """Rewrite the record with a new heartbeat, unless another driver has taken it over."""
        found = read_record(self.loc)
        if found is not None and found.token != self.record.token:
            self.lost = True
            log.error("study %s was taken over by driver %s; this driver no longer "
                      "beats", self.name, found.describe())
            return
        self.record = replace(self.record, heartbeat=time.time())
        self.loc.write_text(self.record.dumps())

    def release(self) -> None:
        """Stop beating and delete the record (if it is still this driver's)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_S + 30)
        with contextlib.suppress(OSError):
            found = read_record(self.loc)
            if found is not None and found.token == self.record.token:
                self.loc.unlink()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


_UNREADABLE = DriverRecord("", "", 0, "", "", 0.0, 0.0, "unreadable")  # a record file no driver wrote


def _write_claim(loc: Location, record: DriverRecord, replacing: DriverRecord | None) -> bool:
    """Write `record` as the study's claim in place of `replacing` (the record judged dead, or None when
    there was none); False when another driver won the race."""
    if loc.is_local:
        path = loc.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if replacing is not None:
            aside = path.with_name(f"{path.name}.dead-{record.token}")
            try:
                os.rename(path, aside)  # of two drivers taking over, one renames the record judged dead
            except FileNotFoundError:
                return False
            moved = read_record(Location.of(aside)) or _UNREADABLE
            if moved.token != replacing.token:  # a live driver's record, written since it was judged
                with contextlib.suppress(FileExistsError):
                    os.link(aside, path)
                aside.unlink()
                return False
            aside.unlink()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(record.dumps())
        return True
    loc.write_text(record.dumps())
    time.sleep(CLAIM_SETTLE_S)
    found = read_record(loc)
    return found is not None and found.token == record.token


def _machine() -> str:
    """This machine's boot and pid namespace (Linux); empty elsewhere."""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    return ""


def _start_time(pid: int) -> str:
    """The start time of process `pid` in clock ticks since boot (Linux /proc), or ''."""
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    return ""


def _pid_alive(pid: int) -> bool:
    """Is process `pid` running (a zombie, killed but not yet reaped, is not)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True

"""The registry's storage lease, which every study's driver honours: one pre-training of a key per storage
path even when two studies need it at once (issue 23, N3). Real files on a local folder; real processes."""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from thoraxmae.study import registry as reg
from thoraxmae.study.registry import LEASE_FILE, LEASE_S, Registry


def _race(root: str, study: str, keys: list[str], start, out) -> None:
    start.wait()
    registry = Registry(root)
    out.put((study, [k for k in keys if registry.claim(k, {"study": study, "trial_id": "t1"}) is None]))


def test_two_studies_racing_for_the_same_keys_get_each_key_once(tmp_path):
    """Two processes (two studies' trials) claim the same 40 keys at the same moment: every key goes to
    exactly one of them."""
    keys = [f"k{i}" for i in range(40)]
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(str(tmp_path), s, keys, start, out)) for s in ("a", "b")]
    for p in procs:
        p.start()
    start.set()
    won = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(60)
    assert sorted(won["a"] + won["b"]) == sorted(keys)  # each key once, none twice, none lost
    assert not set(won["a"]) & set(won["b"])


def test_a_live_lease_is_honoured_renewed_by_its_holder_and_taken_over_when_stale(tmp_path):
    registry = Registry(tmp_path)
    a, b = {"study": "a", "trial_id": "t1"}, {"study": "b", "trial_id": "t9"}
    assert registry.claim("k", a, now=1000.0) is None
    held = registry.claim("k", b, now=1000.0 + LEASE_S / 2)
    assert (held["study"], held["trial_id"]) == ("a", "t1")  # another study waits for it
    assert registry.claim("k", a, now=1010.0) is None  # the holder again (a restarted trial): renewed
    registry.release("k", b)  # not b's: nothing happens
    assert (tmp_path / "pretrain-registry" / "k" / LEASE_FILE).is_file()
    assert registry.claim("k", b, now=1010.0 + LEASE_S + 1) is None  # a's lease went stale: b takes it over
    registry.release("k", b)
    assert not (tmp_path / "pretrain-registry" / "k" / LEASE_FILE).exists()


def test_a_half_written_lease_blocks_until_it_is_stale(tmp_path):
    import os
    import time

    registry = Registry(tmp_path)
    lease = Path(registry.folder("k").path) / LEASE_FILE
    lease.parent.mkdir(parents=True)
    lease.write_text('{"study": "a", "tri')  # its writer died mid-write (or is writing now)
    assert registry.claim("k", {"study": "b", "trial_id": "t"}) is not None  # fresh: wait
    old = time.time() - LEASE_S - 5
    os.utime(lease, (old, old))
    assert registry.claim("k", {"study": "b", "trial_id": "t"}) is None  # stale: taken over


@pytest.mark.parametrize("window", [0.05])
def test_object_store_claims_are_read_back_after_the_window(s3, window, monkeypatch, request):
    from tests.s3_server import BUCKET

    monkeypatch.setattr(reg, "CLAIM_WINDOW_S", window)
    registry = Registry(f"s3://{BUCKET}/tune/{request.node.name.replace('[', '-').rstrip(']')}")
    a, b = {"study": "a", "trial_id": "t1"}, {"study": "b", "trial_id": "t2"}
    assert registry.claim("k", a) is None
    held = registry.claim("k", b)
    assert held is not None and held["study"] == "a"
    registry.release("k", a)
    assert registry.claim("k", b) is None

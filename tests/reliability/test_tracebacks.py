"""The invocations that used to end in a traceback: each is now one `error: ...` line naming the culprit and
the right exit code (2: bad input, refused before anything runs; 1: a run that failed), with Ray never started
where the refusal comes before it (init_ray is a tripwire). Real file systems (tmpfs mounts where a read-only
one is needed), a real S3 server (moto), real sockets."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import write_store_manifest
from tests.reliability.test_bad_inputs import spec_dict, write_spec
from thoraxmae.cli import main


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    from thoraxmae.study.run import ray_local

    def tripwire(**_):
        raise AssertionError("Ray started for an invocation that should have been refused before it")

    monkeypatch.setattr(ray_local, "init_ray", tripwire)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture()
def work(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    write_store_manifest(tmp_path / "store")
    return tmp_path


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


# --- the spec ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "override", "message"), [
    ("[" * 5000, None, r"s\.yaml: nested too deeply; a spec nests at most 32 levels"),
    (f"name: x\nsearch: {deep(5000)}\n", None, r"s\.yaml: nested too deeply"),
    (f"name: x\nsearch: {deep(40)}\n", None, r"s\.yaml: nested too deeply"),  # parses, but deeper than a spec
    (None, f"search.space={deep(5000)}", r"--set search\.space: value nested too deeply"),
])
def test_a_spec_nested_thousands_of_levels_deep_is_one_line(work, capsys, text, override, message):
    spec = work / "s.yaml"
    if text is None:
        write_spec(spec, spec_dict(work))
    else:
        spec.write_text(text)
    code = main(["study", "run", str(spec), *(["--set", override] if override else [])])
    line = one_line(capsys)
    assert code == 2 and line.startswith("error: ") and re.search(message, line), line

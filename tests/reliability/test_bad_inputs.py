"""Bad input stops at the door: every case is one `error: ...` line and exit code 2 from `thoraxmae`,
before Ray starts (init_ray is replaced by a tripwire), and leaves nothing behind (no Tune folder,
no tuner.pkl, no MLflow database). Real SQLite MLflow; checkpoints are real torch files."""
from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from tests.integration.study_helpers import CLI
from thoraxmae.cli import main
from thoraxmae.study import schema
from thoraxmae.study.spec.load import parse_spec, with_defaults
from thoraxmae.study.tracking.writer import StudyTracker


class Pwn:
    """Pickles to a call of os.system: loading it must never run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


pytestmark = pytest.mark.usefixtures("no_ray")  # tests/reliability/conftest.py


def spec_dict(tmp: Path, name: str = "bad", **sections) -> dict:
    raw = {"name": name, "stage": "finetune", "data": {"store": str(tmp / "store")},
           "model": {"name": "vit_tiny_test"}, "finetune": {"epochs": 2, "warmup_epochs": 1},
           "search": {"num_samples": 2,
                      "space": {"finetune.layer_decay": {"type": "float", "low": 0.5, "high": 0.9}}},
           "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}"}, "storage_path": str(tmp / "studies")}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return raw


def write_spec(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def one_line_error(line: str, pattern: str) -> None:
    assert line.startswith("error: "), line
    assert re.search(pattern, line), f"{pattern!r} not in {line!r}"


# --- study run: the spec file and the files it names --------------------------------------------------
def _bad_init(tmp: Path, kind: str) -> Path:
    path = tmp / f"{kind}.pt"
    if kind == "random":
        path.write_bytes(os.urandom(2048))
    elif kind == "pickle":
        torch.save({"model": Pwn(tmp / "PWNED")}, path)
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps(Pwn(tmp / "PWNED")))
    elif kind == "timm":
        torch.save({"pos_embed": torch.zeros(1, 65, 192)}, path)
    return path


@pytest.mark.parametrize(("kind", "fmt", "message"), [
    ("missing", "auto", r"finetune\.init: .*missing\.pt: no such checkpoint file"),
    ("random", "auto", r"finetune\.init: .*random\.pt: "),
    ("pickle", "auto", r"finetune\.init: .*pickle\.pt: "),
    ("plain_pickle", "auto", r"finetune\.init: .*plain_pickle\.pt: "),
    ("timm", "medical_mae", (r"timm\.pt is a timm checkpoint, not medical_mae; set finetune\.init_format to "
                            r"'timm'")),
])
def test_run_refuses_a_bad_finetune_init(work, capsys, kind, fmt, message):
    init = _bad_init(work, kind)
    spec = write_spec(work / "s.yaml", spec_dict(work, finetune={"init": str(init), "init_format": fmt}))
    code, line = run_cli(capsys, "study", "run", str(spec))
    assert code == 2
    one_line_error(line, message)
    assert not (work / "PWNED").exists()  # the pickle never ran
    assert not (work / "studies").exists() and not (work / "mlflow.db").exists()


def test_run_refuses_a_searched_encoder_that_is_not_registered(work, capsys):
    raw = spec_dict(work)
    raw["search"]["space"] = {"finetune.init": {"type": "categorical", "choices": ["registry:nope"]}}
    raw["search"]["coverage"] = 1
    code, line = run_cli(capsys, "study", "run", str(write_spec(work / "s.yaml", raw)))
    assert code == 2
    one_line_error(line, r"finetune\.init: 'registry:nope' matches no registered pre-training in .*/studies/"
                         r"pretrain-registry \(registered: none\)")


@pytest.mark.parametrize(("damage", "message"), [
    ({"format_version": 99}, r"data\.store: .*store format version 99, this thoraxmae reads version"),
    ({"shards": [{"file": "shards/shard-00000.arrow", "rows": 4}]}, (r"data\.store: .*00000\.arrow: store "
                                                                    r"shard missing")),
    (None, r"data\.store: no prepared store at .*nowhere \(manifest\.json missing\)"),
])
def test_run_refuses_a_bad_store(work, capsys, damage, message):
    raw = spec_dict(work)
    if damage is None:
        raw["data"]["store"] = str(work / "nowhere")
    else:
        manifest = json.loads((work / "store" / "manifest.json").read_text())
        (work / "store" / "manifest.json").write_text(json.dumps({**manifest, **damage}))
    code, line = run_cli(capsys, "study", "run", str(write_spec(work / "s.yaml", raw)))
    assert code == 2
    one_line_error(line, message)


def test_run_refuses_a_spec_that_is_not_utf8(work, capsys):
    spec = work / "s.yaml"
    spec.write_bytes(b"name: caf\xe9\nstage: finetune\n")
    code, line = run_cli(capsys, "study", "run", str(spec))
    assert code == 2
    assert line == f"error: {spec}: not UTF-8 text (byte 9: b'\\xe9'); save the spec as UTF-8"


@pytest.mark.parametrize(("override", "message"), [
    ("search.num_samples=100000", r"search\.num_samples: Input should be less than or equal to 10000"),
    ("model.img_size=4096", r"model\.img_size=4096: 65536 patches of 16 px per image, at most 4096"),
    ("resources.max_concurrent_trials=100000", (r"resources\.max_concurrent_trials: Input should be less "
                                               r"than")),
])
def test_run_refuses_unbounded_sizes(work, capsys, override, message):
    spec = write_spec(work / "s.yaml", spec_dict(work, model={"name": "vit_small_patch16"}))
    code, line = run_cli(capsys, "study", "run", str(spec), "--set", override)
    assert code == 2
    one_line_error(line, message)


# --- study run: the tracking URI (validated before the Tune folder exists) ---------------------------------
@pytest.mark.parametrize(("uri", "message"), [
    ("file://{tmp}/mlruns", r"a folder \(MLflow's file store\) is not supported by MLflow 3"),
    ("{tmp}/mlruns", r"a folder \(MLflow's file store\) is not supported by MLflow 3"),
    ("bogus://x", r"unknown scheme `bogus://`"),
    ("sqlite:////proc/thoraxmae/mlflow.db", (r"cannot create /proc/thoraxmae/mlflow\.db: /proc is not "
                                            r"writable")),
    ("sqlite:///{tmp}/store", r".*/store is a folder, not a database file"),
    ("http://127.0.0.1:9", r"no MLflow server answers"),
])
def test_run_refuses_a_bad_tracking_uri_and_leaves_no_tune_state(work, capsys, uri, message):
    uri = uri.format(tmp=work)
    spec = write_spec(work / "s.yaml", spec_dict(work, tracking={"uri": uri}))
    code, line = run_cli(capsys, "study", "run", str(spec))
    assert code == 2
    one_line_error(line, rf"tracking URI {uri.replace('.', '[.]')}: {message}")
    assert not (work / "studies").exists()  # no tuner.pkl: the name is not stuck
    assert not list(work.glob("mlruns*"))


def _started(work: Path, name: str, storage: str = "studies") -> str:
    """A study whose parent run exists in MLflow (with its spec.yaml), as `study run` leaves it."""
    spec = with_defaults(parse_spec(spec_dict(work, name=name, storage_path=str(work / storage))))
    StudyTracker(spec).start_study()
    return spec.tracking.uri


def test_run_refuses_a_name_that_has_a_parent_run_whatever_the_storage_path(work, capsys):
    uri = _started(work, "taken")
    spec = write_spec(work / "s.yaml", spec_dict(work, name="taken", storage_path=str(work / "elsewhere")))
    code, line = run_cli(capsys, "study", "run", str(spec))
    assert code == 2
    one_line_error(line, rf"name: study `taken` already exists in {uri} \(parent run \w+\); continue it with "
                         rf"`thoraxmae study resume taken --tracking-uri {uri}`, delete it with `thoraxmae "
                         r"study remove "
                         rf"taken --tracking-uri {uri} --yes`, or choose another name")
    assert not (work / "elsewhere").exists()


def test_a_failed_start_can_be_removed_and_the_name_used_again(work, capsys):
    folder = work / "studies" / "half"
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(b"")
    spec = write_spec(work / "s.yaml", spec_dict(work, name="half"))
    code, line = run_cli(capsys, "study", "run", str(spec))
    assert code == 2
    one_line_error(line, r"study `half` has a Tune folder .* but no parent run .*; resume it with `thoraxmae "
                         r"study "
                         r"resume half --storage-path .*` or delete it with `thoraxmae study remove half")
    uri = f"sqlite:///{work / 'mlflow.db'}"
    code, line = run_cli(capsys, "study", "remove", "half", "--tracking-uri", uri, "--storage-path",
                         str(work / "studies"))
    assert (code == 1 and line == "nothing deleted: run again with --yes to delete study half"
            and folder.exists())
    assert main(["study", "remove", "half", "--tracking-uri", uri, "--storage-path", str(work / "studies"),
                 "--yes"]) == 0
    assert not folder.exists() and not (work / "mlflow.db").exists()  # no database was needed, none was made


def test_confirm_refuses_one_seed_before_ray_starts(work, capsys):
    uri = _started(work, "one")
    code, line = run_cli(capsys, "study", "confirm", "one", "--tracking-uri", uri, "--seeds", "1")
    assert code == 2
    one_line_error(line, r"confirm: --top 3 --seeds 1: need at least 1 recipe and 2 seeds \(a spread\)")


# --- status / resume / remove: read-only lookups --------------------------------------------------------
@pytest.mark.parametrize("command", ["status", "resume", "remove"])
@pytest.mark.parametrize(("uri", "message"), [
    ("file://{tmp}/mlruns", r"a folder \(MLflow's file store\) is not supported by MLflow 3"),
    ("bogus://x", r"unknown scheme `bogus://`"),
    ("sqlite:////proc/thoraxmae/mlflow.db", (r"no MLflow database at /proc/thoraxmae/mlflow\.db \(nothing "
                                            r"created")),
    ("sqlite:///{tmp}/no/such/dir/mlflow.db", r"no MLflow database at .*/no/such/dir/mlflow\.db"),
    ("http://127.0.0.1:9", r"no MLflow server answers"),
])
def test_lookups_refuse_a_bad_tracking_uri_and_create_nothing(work, capsys, command, uri, message):
    uri = uri.format(tmp=work)
    before = sorted(p.name for p in work.iterdir())
    code, line = run_cli(capsys, "study", command, "some-study", "--tracking-uri", uri)
    if command == "remove" and uri.startswith("sqlite"):  # no database: nothing of the study there
        assert code == 2 and "nothing to remove" in line
    else:
        assert code == 2
        one_line_error(line, message)
    assert sorted(p.name for p in work.iterdir()) == before


@pytest.mark.parametrize("command", ["status", "resume"])
def test_lookups_on_the_default_uri_create_no_database(work, capsys, command):
    code, line = run_cli(capsys, "study", command, "some-study")
    assert code == 2
    one_line_error(line, rf"no MLflow database at {work}/mlflow\.db \(nothing created")
    assert not (work / "mlflow.db").exists()
    code, line = run_cli(capsys, "study", command, "some-study", "--storage-path", str(work / "nowhere")) \
        if command == "resume" else (2, "error: x")
    assert code == 2 and not (work / "nowhere").exists()


@pytest.mark.parametrize("command", ["status", "resume", "remove"])
def test_a_name_with_a_quote_is_refused(work, capsys, command):
    _started(work, "real")
    code, line = run_cli(capsys, "study", command, "x' or tags.`thoraxmae.role` = 'study",
                         "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}")
    assert code == 2
    one_line_error(line, r"study name .*: expected letters, digits")


def test_resume_of_a_study_without_tune_state_names_remove(work, capsys):
    uri = _started(work, "notune")
    code, line = run_cli(capsys, "study", "resume", "notune", "--tracking-uri", uri)
    assert code == 2
    one_line_error(line, rf"no Tune state for study `notune` at {work}/studies/notune .*delete it with "
                         r"`thoraxmae "
                         rf"study remove notune --tracking-uri {uri} --storage-path {work}/studies --yes`")


def test_status_of_a_database_that_is_not_mlflow(work, capsys):
    (work / "mlflow.db").write_bytes(os.urandom(1024))
    code, line = run_cli(capsys, "study", "status", "x")
    assert code == 2
    one_line_error(line, r"cannot be read as an SQLite database \(file is not a database\)")


# --- the real command line: no traceback anywhere
# ------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["study", "run", "{tmp}/latin1.yaml"],
    ["study", "status", "x", "--tracking-uri", "bogus://x"],
])
def test_the_command_line_prints_one_line_and_no_traceback(work, argv):
    (work / "latin1.yaml").write_bytes("name: café\n".encode("latin-1"))
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    done = subprocess.run([*CLI, *(a.format(tmp=work) for a in argv)], capture_output=True, text=True,
                          env=env,
                          cwd=work, timeout=120, check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith("error: ")
    assert schema.ROLE_STUDY  # the run schema module imports without Ray


# --- the other commands that start Ray or a cluster job
# ------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["finetune", "{spec}"],
    ["study", "submit", "{spec}", "--address", "http://127.0.0.1:9"],
])
@pytest.mark.parametrize(("uri", "message"), [
    ("file:///{tmp}/mlruns", r"a folder \(MLflow's file store\) is not supported by MLflow 3"),
    ("bogus://x", r"unknown scheme `bogus://`"),
])
def test_single_runs_and_submissions_refuse_a_bad_tracking_uri(work, capsys, argv, uri, message):
    spec = write_spec(work / "s.yaml", spec_dict(work, tracking={"uri": uri.format(tmp=work)}))
    code, line = run_cli(capsys, *(a.format(spec=spec) for a in argv))
    assert code == 2
    one_line_error(line, message)


@pytest.mark.parametrize(("uri", "message"), [
    ("file://{tmp}/mlruns", r"a folder \(MLflow's file store\) is not supported by MLflow 3"),
    ("{tmp}/mlruns", r"a folder \(MLflow's file store\) is not supported by MLflow 3"),
    ("bogus://x", r"unknown scheme `bogus://`"),
    ("sqlite:////proc/thoraxmae/mlflow.db", r"no MLflow database at /proc/thoraxmae/mlflow\.db"),
    ("http://127.0.0.1:9", r"no MLflow server answers"),
])
def test_report_refuses_a_bad_tracking_uri_and_creates_nothing(work, capsys, uri, message):
    uri = uri.format(tmp=work)
    before = sorted(p.name for p in work.iterdir())
    code, line = run_cli(capsys, "report", "some-study", "--tracking-uri", uri, "--out", str(work / "report"))
    assert code == 2
    one_line_error(line, message)
    assert sorted(p.name for p in work.iterdir()) == before


@pytest.mark.parametrize(("uri", "message"), [
    ("file://{tmp}/mlruns", r"a folder \(MLflow's file store\) is not supported by MLflow 3"),
    ("bogus://x", r"unknown scheme `bogus://`"),
    ("sqlite:////proc/thoraxmae/mlflow.db", (r"cannot create /proc/thoraxmae/mlflow\.db: /proc is not "
                                            r"writable")),
])
def test_ui_refuses_a_bad_tracking_uri_before_starting_mlflow(work, capsys, monkeypatch, uri, message):
    from thoraxmae.cli import ui as cli_ui

    monkeypatch.setattr(cli_ui, "serve", lambda cmd, env: pytest.fail(f"MLflow started: {cmd}"))
    code, line = run_cli(capsys, "ui", "--tracking-uri", uri.format(tmp=work))
    assert code == 2
    one_line_error(line, message)

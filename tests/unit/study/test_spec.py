"""The study spec: every error names its field (or file and line), overrides are typed, defaults resolve."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_store_manifest
from thoraxmae.study import schema
from thoraxmae.study.errors import SpecError
from thoraxmae.study.spec.coverage import study_points
from thoraxmae.study.spec.load import dump_spec, load_spec, parse_spec


def _spec_dict(stage: str = "finetune") -> dict:
    d = {
        "name": "unit",
        "stage": stage,
        "data": {"store": "store"},
        "model": {"name": "vit_tiny_test", "img_size": 64, "patch_size": 8},
        "search": {"num_samples": 4, "space": {}},
    }
    if stage in ("finetune", "pipeline"):
        d["finetune"] = {"epochs": 4, "warmup_epochs": 2}
        d["search"]["space"]["finetune.layer_decay"] = {"type": "float", "low": 0.4, "high": 0.9}
    if stage in ("pretrain", "pipeline"):
        d["pretrain"] = {"epochs": 3, "warmup_epochs": 1}
        d["search"]["space"]["pretrain.mask_ratio"] = {"type": "categorical", "choices": [0.75, 0.9]}
    return d


@pytest.fixture()
def write(tmp_path):
    write_store_manifest(tmp_path / "store")

    def _write(d: dict | str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(d if isinstance(d, str) else yaml.safe_dump(d, sort_keys=False))
        return path

    return _write


def _set(d: dict, dotted: str, value) -> dict:
    keys = dotted.split("/")
    node = d
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return d


def test_valid_spec_loads_with_resolved_paths_and_defaults(write, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    spec = load_spec(write(_spec_dict("pipeline")))
    assert spec.data.store == (tmp_path / "store").resolve()
    assert spec.tracking.uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert spec.tracking.experiment == "unit"
    assert spec.storage_path == (tmp_path / "studies").resolve()
    assert (spec.metric, spec.mode, spec.max_t) == (schema.M_VAL_MAUC, "max", 4)
    assert spec.phases == ("pretrain", "finetune")


def test_pretrain_stage_defaults_to_loss_minimised(write):
    spec = load_spec(write(_spec_dict("pretrain")))
    assert (spec.metric, spec.mode, spec.max_t) == (schema.M_PRETRAIN_LOSS, "min", 3)


def test_relative_sqlite_uri_is_relative_to_the_spec(write, tmp_path):
    d = _set(_spec_dict(), "tracking/uri", "sqlite:///runs/m.db")
    spec = load_spec(write(d))
    assert spec.tracking.uri == f"sqlite:///{(tmp_path / 'runs' / 'm.db').resolve()}"


def test_dumped_spec_loads_back_equal(write, tmp_path):
    spec = load_spec(write(_spec_dict("pipeline")))
    again = load_spec(write(dump_spec(spec), name="again.yaml"))
    assert again == spec


def test_yaml_syntax_error_names_file_and_line(write):
    path = write("name: x\nstage: finetune\ndata: {store: [unclosed\nmodel: {}\n")
    with pytest.raises(SpecError, match=r"spec\.yaml:\d+:\d+: invalid YAML"):
        load_spec(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(SpecError, match="nope.yaml"):
        load_spec(tmp_path / "nope.yaml")


@pytest.mark.parametrize("where, value, field", [
    ("finetune/drop_paht", 0.1, r"finetune\.drop_paht: unknown key"),
    ("searhc", {}, r"searhc: unknown key"),
    ("search/sampler/seeed", 1, r"search\.sampler\.seeed: unknown key"),
    ("search/space/finetune.layer_decay/lwo", 0.1, r"search\.space\.finetune\.layer_decay\.lwo: unknown key"),
])
def test_unknown_keys_are_named(write, where, value, field):
    with pytest.raises(SpecError, match=field):
        load_spec(write(_set(_spec_dict(), where, value)))


@pytest.mark.parametrize("stage, where, value, field", [
    ("pretrain", "pretrain/mask_ratio", 1.2, r"pretrain\.mask_ratio"),
    ("pretrain", "pretrain/mask_ratio", 0.0, r"pretrain\.mask_ratio"),
    ("pretrain", "pretrain/crop_min", 1.5, r"pretrain\.crop_min"),
    ("finetune", "finetune/crop_min", 1.01, r"finetune\.crop_min"),
    ("finetune", "finetune/layer_decay", 0.0, r"finetune\.layer_decay"),
    ("finetune", "finetune/drop_path", -0.1, r"finetune\.drop_path"),
    ("finetune", "finetune/warmup_epochs", 9, r"finetune\.warmup_epochs"),
    ("finetune", "resources/gpus_per_worker", 1.5, r"resources\.gpus_per_worker"),
    ("finetune", "name", "bad name!", r"name"),
])
def test_impossible_fixed_values_are_named(write, stage, where, value, field):
    with pytest.raises(SpecError, match=field):
        load_spec(write(_set(_spec_dict(stage), where, value)))


@pytest.mark.parametrize("stage, knob, dist, field", [
    ("pretrain", "pretrain.mask_ratio", {"type": "float", "low": 0.5, "high": 1.0},
     r"search\.space\.pretrain\.mask_ratio\.high: pretrain\.mask_ratio=1\.0 is not a valid value"),
    ("pretrain", "pretrain.mask_ratio", {"type": "categorical", "choices": [0.75, 1.2]},
     r"search\.space\.pretrain\.mask_ratio\.choices\[1\]"),
    ("pretrain", "pretrain.crop_min", {"type": "float", "low": 0.2, "high": 1.5},
     r"search\.space\.pretrain\.crop_min\.high"),
    ("finetune", "finetune.layer_decay", {"type": "float", "low": 0.0, "high": 0.9},
     r"search\.space\.finetune\.layer_decay\.low"),
    ("finetune", "finetune.drop_path", {"type": "float", "low": -0.1, "high": 0.3},
     r"search\.space\.finetune\.drop_path\.low"),
    ("finetune", "finetune.drop_path", {"type": "float", "low": 0.3, "high": 0.1},
     r"search\.space\.finetune\.drop_path\.high: high=0\.1 is below low=0\.3"),
    ("finetune", "finetune.blr", {"type": "float", "low": 0.0, "high": 1e-3, "log": True},
     r"search\.space\.finetune\.blr\.low"),
    ("finetune", "finetune.randaug_magnitude", {"type": "int", "low": 0, "high": 40},
     r"search\.space\.finetune\.randaug_magnitude\.high"),
    ("finetune", "finetune.epochs", {"type": "int", "low": 2, "high": 8},
     r"search\.space\.finetune\.epochs\.low: .*warmup_epochs"),
    ("finetune", "finetune.drop_paht", {"type": "float", "low": 0.0, "high": 0.3},
     r"search\.space\.finetune\.drop_paht: .*not a finetune knob"),
    # searched encoders: files checked
    ("finetune", "finetune.init", {"type": "categorical", "choices": ["a.pt"]},
     r"finetune\.init: /\S*/a\.pt: no such checkpoint file"),
    ("finetune", "dropout", {"type": "float", "low": 0.0, "high": 0.3},
     r"search\.space\.dropout: .*not a knob"),
    ("finetune", "pretrain.mask_ratio", {"type": "float", "low": 0.6, "high": 0.9},
     r"search\.space\.pretrain\.mask_ratio: stage `finetune` does not run pretrain"),
    ("pretrain", "finetune.layer_decay", {"type": "float", "low": 0.4, "high": 0.9},
     r"search\.space\.finetune\.layer_decay: stage `pretrain` does not run finetune"),
    ("finetune", "finetune.layer_decay", {"type": "uniform", "low": 0.4, "high": 0.9},
     r"search\.space\.finetune\.layer_decay"),
])
def test_impossible_search_ranges_are_named(write, stage, knob, dist, field):
    d = _spec_dict(stage)
    d["search"]["space"][knob] = dist
    with pytest.raises(SpecError, match=field):
        load_spec(write(d))


def test_section_the_stage_does_not_run_is_an_error(write):
    d = _spec_dict("finetune")
    d["pretrain"] = {"mask_ratio": 0.75}
    with pytest.raises(SpecError, match=r"pretrain: not used by stage `finetune`"):
        load_spec(write(d))


def test_section_the_stage_needs_is_required(write):
    d = _spec_dict("pipeline")
    del d["pretrain"]
    with pytest.raises(SpecError, match=r"pretrain: section required by stage `pipeline`"):
        load_spec(write(d))


def test_pipeline_sets_finetune_init_itself(write):
    d = _set(_spec_dict("pipeline"), "finetune/init", "enc.pt")
    with pytest.raises(SpecError, match=r"finetune\.init: set by the pipeline"):
        load_spec(write(d))


def test_missing_data_store_is_named(write, tmp_path):
    d = _set(_spec_dict(), "data/store", "elsewhere")
    with pytest.raises(SpecError, match=r"data\.store: no prepared store at .*elsewhere \(manifest\.json "
                                        r"missing\)"):
        load_spec(write(d))
    assert load_spec(write(d), check_files=False).data.store == (tmp_path / "elsewhere").resolve()


def test_points_to_evaluate_must_lie_in_the_space(write):
    d = _spec_dict()
    d["search"]["points_to_evaluate"] = [{"finetune.layer_decay": 0.95}]
    with pytest.raises(SpecError, match=r"search\.points_to_evaluate\[0\]\.finetune\.layer_decay: 0\.95 is "
                                        r"outside"):
        load_spec(write(d))
    d["search"]["points_to_evaluate"] = [{"finetune.drop_path": 0.1}]
    with pytest.raises(SpecError, match=r"points_to_evaluate\[0\]\.finetune\.drop_path: not a searched knob"):
        load_spec(write(d))


def test_paper_point_expands_to_the_searched_knobs(write):
    d = _spec_dict("pipeline")
    d["search"]["points_to_evaluate"] = ["paper"]
    spec = load_spec(write(d))
    assert study_points(spec)[0] == {"pretrain.mask_ratio": 0.9, "finetune.layer_decay": 0.55}


def test_scheduler_bounds_are_checked(write):
    d = _set(_spec_dict(), "search/scheduler/grace_period", 5)
    with pytest.raises(SpecError, match=r"search\.scheduler\.grace_period=5 exceeds max_t=4"):
        load_spec(write(d))
    d = _set(_spec_dict(), "search/scheduler/max_t", 9)
    with pytest.raises(SpecError, match=r"search\.scheduler\.max_t=9 exceeds finetune\.epochs=4"):
        load_spec(write(d))


def test_max_t_follows_a_searched_epochs_knob(write):
    d = _spec_dict()
    d["search"]["space"]["finetune.epochs"] = {"type": "int", "low": 3, "high": 6}
    assert load_spec(write(d)).max_t == 6


def test_overrides_are_typed_by_yaml(write):
    spec = load_spec(write(_spec_dict()), ["finetune.drop_path=0.1", "search.num_samples=8",
                                           "finetune.hflip=true",
                                           "search.space.finetune.layer_decay.high=0.8",
                                           "resources.gpus_per_worker=0.5"])
    assert spec.finetune.drop_path == 0.1 and isinstance(spec.finetune.drop_path, float)
    assert spec.search.num_samples == 8 and spec.finetune.hflip is True
    assert spec.search.space["finetune.layer_decay"].high == 0.8
    assert math.isclose(spec.resources.gpus_per_worker, 0.5)


def test_override_paths_are_relative_to_cwd(write, tmp_path, monkeypatch):
    other = tmp_path / "sub"
    write_store_manifest(other / "store")
    monkeypatch.chdir(other)
    spec = load_spec(write(_spec_dict()), ["data.store=store"])
    assert spec.data.store == (other / "store").resolve()


@pytest.mark.parametrize("item, match", [
    ("finetune.drop_path", r"--set 'finetune\.drop_path': expected key=value"),
    ("finetune.drop_path=-1", r"finetune\.drop_path"),
    ("finetune.drop_paht=0.1", r"finetune\.drop_paht: unknown key"),
    ("name.sub=1", r"--set name\.sub: name is not a section"),
])
def test_bad_overrides_are_named(write, item, match):
    with pytest.raises(SpecError, match=match):
        load_spec(write(_spec_dict()), [item])


def test_parse_spec_rejects_a_non_mapping():
    with pytest.raises(SpecError, match="mapping"):
        parse_spec(["not", "a", "spec"])


def test_partial_points_take_the_fixed_values(write):
    d = _spec_dict()
    d["finetune"]["drop_path"] = 0.1
    d["search"]["space"]["finetune.drop_path"] = {"type": "float", "low": 0.0, "high": 0.3}
    d["search"]["points_to_evaluate"] = [{"finetune.layer_decay": 0.5}]
    assert study_points(load_spec(write(d))) == [{"finetune.layer_decay": 0.5, "finetune.drop_path": 0.1}]
    d["finetune"]["drop_path"] = 0.4
    with pytest.raises(SpecError, match=r"points_to_evaluate\[0\]\.finetune\.drop_path: 0\.4 \(the point "
                                        r"leaves it out"):
        load_spec(write(d))


def test_pretrain_data_is_checked_and_used_only_for_pretraining(write, tmp_path):
    d = _set(_spec_dict("pipeline"), "pretrain_data/store", "mix")
    with pytest.raises(SpecError, match=r"pretrain_data\.store: no prepared store"):
        load_spec(write(d))
    write_store_manifest(tmp_path / "mix")
    spec = load_spec(write(d))
    assert spec.data_for("pretrain").store == (tmp_path / "mix").resolve()
    assert spec.data_for("finetune").store == (tmp_path / "store").resolve()
    with pytest.raises(SpecError, match=r"pretrain_data: not used by stage `finetune`"):
        load_spec(write(_set(_spec_dict("finetune"), "pretrain_data/store", "mix")))


def test_searching_on_a_test_metric_is_a_spec_error(write):
    d = _spec_dict("finetune")
    d["search"]["metric"] = "test/mauc"
    with pytest.raises(SpecError, match=r"search\.metric: test/mauc is a test-split metric; .*val/mauc"):
        load_spec(write(d))

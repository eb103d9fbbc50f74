"""Loading a study spec: YAML (bounded, UTF-8), `--set key=value` overrides, paths resolved, defaults
filled, then the typed model (study.spec.model) and the meaning checks (study.spec.checks).

Relative paths written in the YAML are relative to the spec file; `--set` values are relative to the
working directory. Defaults: tracking.uri = $MLFLOW_TRACKING_URI or sqlite:///<cwd>/mlflow.db,
tracking.experiment = name, storage_path = <cwd>/studies. `load_spec` returns them resolved (absolute).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from thoraxmae.datasets.storage import absolute
from thoraxmae.study.errors import SpecError
from thoraxmae.study.spec import checks
from thoraxmae.study.spec.model import StudySpec

MAX_SPEC_BYTES = 1_000_000
MAX_SPEC_DEPTH = 32  # sections nest a few levels (search.space.<knob>.choices[i]); deeper is not a spec
_PATH_FIELDS = (("data", "store"), ("pretrain_data", "store"), ("storage_path",), ("finetune", "init"),
               ("confirm", "reference"))


def load_spec(path: Path | str, overrides: list[str] | None = None, *, check_files: bool = True) -> StudySpec:
    """Read, override (`key=value`, value parsed as YAML), resolve paths and validate a spec.

    Raises SpecError naming the file and the field (or line, for YAML syntax errors, or byte, for a
    file that is not UTF-8). With `check_files`, the files the spec names are checked here
    (checks.check_files: stores of this format, readable checkpoints); `study submit` skips that
    because they live on the cluster.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise SpecError(f"{path}: spec file not found")
    raw = _read_yaml(path)
    overridden = set()
    for item in overrides or []:
        overridden.add(_apply_override(raw, item, path))
    _resolve_paths(raw, base=path.parent, overridden=overridden)
    spec = parse_spec(raw, source=str(path))
    spec = with_defaults(spec)
    if check_files:
        checks.check_files(spec, source=str(path))
    return spec


def parse_spec(raw: Any, source: str = "<spec>") -> StudySpec:
    """Validate a spec mapping; SpecError lists every problem as `source: field.path: reason`."""
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a spec is a mapping of sections, got {type(raw).__name__}")
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as exc:
        lines = [_format_error(e) for e in exc.errors()]
        raise SpecError(f"{source}: " + "\n  ".join(lines)) from None
    problems = checks.semantic_problems(spec)
    if problems:
        raise SpecError(f"{source}: " + "\n  ".join(problems))
    return spec


def with_defaults(spec: StudySpec) -> StudySpec:
    """Fill tracking.uri, tracking.experiment and storage_path (absolute) where the spec left them out."""
    uri = (spec.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI")
           or f"sqlite:///{Path.cwd() / 'mlflow.db'}")
    tracking = spec.tracking.model_copy(update={"uri": uri, "experiment": spec.experiment})
    storage = absolute(spec.storage_path or Path.cwd() / "studies")
    return spec.model_copy(update={"tracking": tracking, "storage_path": storage})


def dump_spec(spec: StudySpec) -> str:
    """The resolved spec as YAML (the `spec.yaml` artifact); `load_spec` reads it back unchanged."""
    data = spec.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False)


def _read_yaml(path: Path) -> dict:
    data = path.read_bytes()
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: {len(data)} bytes; a spec is at most {MAX_SPEC_BYTES} bytes of YAML")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); "
                        f"save the spec as UTF-8") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise SpecError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: invalid YAML: {exc}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise SpecError(f"{path}: nested too deeply; a spec nests at most {MAX_SPEC_DEPTH} levels") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a spec is a mapping of sections, got {type(raw).__name__}")
    _check_depth(raw, str(path))
    return raw


def _check_depth(value: Any, source: str) -> None:
    """Refuse a value nested deeper than MAX_SPEC_DEPTH (walked without recursion), before the recursive
    code after loading (validation, dumps) meets it."""
    todo = [(value, 1)]
    while todo:
        node, depth = todo.pop()
        if depth > MAX_SPEC_DEPTH:
            raise SpecError(f"{source}: nested too deeply; a spec nests at most {MAX_SPEC_DEPTH} levels")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        todo.extend((child, depth + 1) for child in children)


def _split_key(key: str) -> list[str]:
    """`search.space.finetune.drop_path.high` -> [search, space, finetune.drop_path, high]."""
    parts = key.split(".")
    if parts[:2] == ["search", "space"] and len(parts) >= 4:
        return parts[:2] + [".".join(parts[2:4])] + parts[4:]
    return parts


def _apply_override(raw: dict, item: str, source: Path) -> tuple[str, ...]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set {item!r}: expected key=value, e.g. finetune.drop_path=0.1")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"--set {key}: value {text!r} is not valid YAML ({exc})") from None
    except RecursionError:
        raise SpecError(f"--set {key}: value nested too deeply") from None
    _check_depth(value, f"--set {key}")
    parts = _split_key(key.strip())
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a section in {source}")
        node = child
    node[parts[-1]] = value
    return tuple(parts)


def _resolve_paths(raw: dict, base: Path, overridden: set[tuple[str, ...]]) -> None:
    for fields in _PATH_FIELDS:
        node = raw
        for f in fields[:-1]:
            node = node.get(f) if isinstance(node, dict) else None
        value = node.get(fields[-1]) if isinstance(node, dict) else None
        # a registered pre-training (study/registry.py)
        if not isinstance(value, str) or value.startswith("registry:"):
            continue
        # a URI stays as it is
        node[fields[-1]] = str(absolute(value, Path.cwd() if fields in overridden else base))
    init = (((raw.get("search") or {}).get("space") or {}).get("finetune.init")
            if isinstance(raw.get("search"), dict) else None)
    if isinstance(init, dict) and isinstance(init.get("choices"), list):  # an encoder study's checkpoints
        init["choices"] = [str(absolute(c, base))
                           if isinstance(c, str) and not c.startswith("registry:") else c
                           for c in init["choices"]]
    tracking = raw.get("tracking")
    if isinstance(tracking, dict) and isinstance(tracking.get("uri"), str):
        root = Path.cwd() if ("tracking", "uri") in overridden else base
        tracking["uri"] = _resolve_sqlite(tracking["uri"], root)


def _resolve_sqlite(uri: str, root: Path) -> str:
    """`sqlite:///mlflow.db` (relative) -> `sqlite:////abs/mlflow.db`; other URIs unchanged."""
    m = re.fullmatch(r"sqlite:///(.+)", uri)
    if not m or m.group(1).startswith("/"):
        return uri
    return f"sqlite:///{(root / m.group(1)).resolve()}"


def _format_error(err: dict) -> str:
    loc = [str(p) for p in err["loc"]]
    # discriminated unions add the tag (`float`) to the path: search.space.<knob>.float.low
    if len(loc) >= 4 and loc[:2] == ["search", "space"] and loc[3] in ("float", "int", "categorical"):
        loc = loc[:3] + loc[4:]
    path = ".".join(loc)
    if err["type"] == "value_error" and "error" in err.get("ctx", {}):
        msg = str(err["ctx"]["error"])
        return msg if not path or msg.startswith(path) else f"{path}: {msg}"
    shown = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {err.get('input')!r})"
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown key"
    return f"{path}: {err['msg']}{shown}" if path else f"{err['msg']}{shown}"

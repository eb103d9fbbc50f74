"""The lock files and pyproject.toml's dependency table: `make lock` stamps, `make venv` checks.

A lock's first line records the SHA-256 of pyproject's [project] dependencies, optional-dependencies and
requires-python (as canonical JSON). `check` prints one line naming `make lock` and exits 1 when a lock is
missing or was made from another table; it prints nothing when every lock matches.

    python .ci/lock.py stamp requirements.lock requirements-test.lock   # after uv pip compile
    python .ci/lock.py check requirements.lock requirements-test.lock
"""
from __future__ import annotations

import hashlib
import json
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path("pyproject.toml")
HEADER = "# pyproject-dependencies-sha256: "


def dependency_hash(pyproject: Path = PYPROJECT) -> str:
    project = tomllib.loads(pyproject.read_text())["project"]
    table = {key: project.get(key) for key in ("requires-python", "dependencies", "optional-dependencies")}
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()


def recorded_hash(lock: Path) -> str | None:
    first = lock.read_text().split("\n", 1)[0] if lock.is_file() else ""
    return first[len(HEADER):].strip() if first.startswith(HEADER) else None


def stamp(locks: list[Path]) -> None:
    digest = dependency_hash()
    for lock in locks:
        body = lock.read_text()
        if body.startswith(HEADER):
            body = body.split("\n", 1)[1]
        lock.write_text(f"{HEADER}{digest}\n{body}")


def check(locks: list[Path]) -> str | None:
    digest = dependency_hash()
    for lock in locks:
        if not lock.is_file():
            return f"{lock} is missing: run `make lock` to generate it from pyproject.toml"
        if recorded_hash(lock) != digest:
            return (f"{lock} does not match the dependencies in pyproject.toml: "
                    "run `make lock` to regenerate it (and commit it)")
    return None


def main(argv: list[str]) -> int:
    command, locks = argv[0], [Path(a) for a in argv[1:]]
    if command == "stamp":
        stamp(locks)
        return 0
    problem = check(locks)
    if problem:
        print(problem)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

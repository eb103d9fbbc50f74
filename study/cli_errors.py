"""Turn our boundary errors into one clear line on stderr and exit code 2 (no traceback)."""
from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from datasets.errors import DataError


def user_errors(fn: Callable[..., int]) -> Callable[..., int]:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> int:
        from study.errors import SpecError
        from trainers.errors import CheckpointError

        try:
            return fn(*args, **kwargs)
        except (DataError, SpecError, CheckpointError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapper

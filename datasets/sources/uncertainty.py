"""CheXpert-style uncertain labels (-1) as a per-label policy (docs/data-formats.md "CheXpert").

"zeros" (U-Zeros): uncertain -> 0; "ones" (U-Ones): uncertain -> 1; "ignore" (U-Ignore): the entry
is masked out of the loss (mask 0). Blank (not mentioned) is always a negative: label 0, mask 1.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from thoraxmae.datasets.errors import DataError

POLICIES = ("ignore", "zeros", "ones")
UncertaintyOption = str | Mapping[str, str] | None


def resolve_policy(option: UncertaintyOption, label_names: Sequence[str],
                   default: Mapping[str, str], fallback: str) -> dict[str, str]:
    """One policy per label: `option` may be one policy for all labels, a dict label -> policy
    (labels it leaves out take `default`, else `fallback`), or None (all from `default`/`fallback`)."""
    if isinstance(option, str):
        chosen = {n: option for n in label_names}
    else:
        extra = sorted(set(option or {}) - set(label_names))
        if extra:
            raise DataError(f"option uncertainty names unknown label(s) {extra}; labels are "
                            f"{list(label_names)}")
        chosen = {n: (option or {}).get(n, default.get(n, fallback)) for n in label_names}
    for name, policy in chosen.items():
        if policy not in POLICIES:
            raise DataError(f"option uncertainty[{name!r}]={policy!r} is not one of {POLICIES}")
    return chosen


def apply_policy(raw: np.ndarray, label_names: Sequence[str],
                 policy: Mapping[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """raw [N, K] float (1, 0, -1, NaN = blank) -> labels [N, K] float32, mask [N, K] uint8."""
    labels = np.nan_to_num(raw, nan=0.0).astype(np.float32)  # blank -> 0
    mask = np.ones(raw.shape, np.uint8)
    for j, name in enumerate(label_names):
        uncertain = raw[:, j] == -1
        labels[uncertain, j] = 1.0 if policy[name] == "ones" else 0.0
        if policy[name] == "ignore":
            mask[uncertain, j] = 0
    return labels, mask

"""Reading the sources' CSV and list files; every error names the file, the line and the column.

Line numbers are 1-based file lines: the first data row of a CSV with a header is line 2.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from thoraxmae.datasets.errors import DataError


def csv_line(row: int) -> int:
    """The file line of data row `row` (0-based) of a CSV with one header line."""
    return row + 2


def read_csv_checked(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """All cells as stripped strings (blank stays ""), with the `required` columns present.

    `index_col=False` keeps a trailing comma (Data_Entry_2017.csv) from shifting the columns.
    """
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: cannot parse as CSV ({e})") from e
    df.columns = [str(c).strip() for c in df.columns]
    for c in required:
        if c not in df.columns:
            raise DataError(f"{path}: missing column {c!r} (required: {list(required)}; found: "
                            f"{list(df.columns)})")
    return df


def strings(col: pd.Series) -> np.ndarray:
    """A column as an object array of stripped Python strings."""
    return np.array([str(v).strip() for v in col.to_numpy(dtype=object)], dtype=object)


def parse_label_values(df: pd.DataFrame, columns: Sequence[str], path: Path,
                       allowed: Sequence[float] = (1.0, 0.0, -1.0)) -> np.ndarray:
    """Label cells -> float32 [N, K]; blank -> NaN. Accepts `1`, `1.0`, `0`, `-1.0`, ... within `allowed`."""
    out = np.empty((len(df), len(columns)), np.float32)
    for j, c in enumerate(columns):
        text = df[c].astype(str).str.strip()
        values = pd.to_numeric(text.where(text != "", None), errors="coerce").to_numpy(dtype=np.float64,
                                                                                       na_value=np.nan)
        bad = (np.isnan(values) & (text != "").to_numpy()) | (~np.isnan(values) & ~np.isin(values, allowed))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            shown = ", ".join(f"{v:g}" for v in allowed)
            raise DataError(f"{path}: line {csv_line(i)}, column {c!r}: value {text.iloc[i]!r} is not one of "
                            f"{shown} or blank")
        out[:, j] = values
    return out


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped text) of each non-blank line of a list file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            text = line.strip()
            if text:
                yield number, text


def check_unique(values: np.ndarray, path: Path, column: str, lines: np.ndarray | None = None) -> None:
    """DataError naming the line of the first repeated value of `column` (`lines`: file line of each
    value)."""
    seen: dict[str, int] = {}
    for i, v in enumerate(values.tolist()):
        line = int(lines[i]) if lines is not None else csv_line(i)
        if v in seen:
            raise DataError(f"{path}: line {line}: duplicate {column} {v!r} (first on line {seen[v]})")
        seen[v] = line

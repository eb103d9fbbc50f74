"""Errors raised at the datasets boundary: the message names the file, row or field."""


class DataError(ValueError):
    """Bad input data: a missing or corrupt image, a malformed CSV, a leaking split, ..."""

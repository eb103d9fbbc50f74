"""Fixtures shared by the study unit tests."""
from __future__ import annotations

import json

import pytest


@pytest.fixture()
def store(tmp_path):
    """A prepared store's manifest only (content hash `abc123`): what a registry key reads of a store."""
    s = tmp_path / "store"
    s.mkdir()
    (s / "manifest.json").write_text(json.dumps({"content_hash": "abc123"}))
    return s

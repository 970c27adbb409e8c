"""Shared fixtures: the real data directory beside the project, tiny graphs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The real input data: $GEOACCESS_DATA, else ../shared/data beside the project."""
    env = os.environ.get("GEOACCESS_DATA")
    if env:
        return Path(env)
    return PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.fail(f"real data not found at {path}: set GEOACCESS_DATA or place shared/ beside the project")
    return path

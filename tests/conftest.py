"""Shared fixtures: a tiny random model (built once per session) and generated activity days."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.models import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-random")

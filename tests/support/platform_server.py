"""uvicorn factory for tests: the real jobs API with the engine double from platform_api."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from asr_assets.platform.api.app import create_app, jobs_backend
from asr_assets.platform.tenancy.settings import load_settings
from tests.support.platform_api import FileJobsBackend


def build_app() -> FastAPI:
    app = create_app(load_settings())
    backend = FileJobsBackend(Path(os.environ["ASR_TEST_ENGINE_DIR"]))
    app.dependency_overrides[jobs_backend] = lambda: backend
    return app

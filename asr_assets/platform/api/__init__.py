"""The jobs API: one FastAPI service in front of the platform core (`asr_assets.platform.jobs`)."""

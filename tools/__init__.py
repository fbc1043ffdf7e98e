"""Offline tooling: data synthesis, demo-model training, evaluation and export.

Nothing here is imported by the code location (`asr_assets`); these modules are run by hand or
from make targets as ``python -m tools.<name>``.
"""

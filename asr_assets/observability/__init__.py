"""Logs, traces and metrics; usable from every layer."""

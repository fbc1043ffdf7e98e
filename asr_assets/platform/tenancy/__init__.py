"""Tenants, API keys, job records, quotas and usage: the state the jobs API keeps beside Dagster.

Dagster owns run state; this package owns only what Dagster has no place for (who submitted a job,
with which idempotency key and request, under which quotas, and what it cost).
"""

"""Retry, rate-limit and circuit-breaker policy: one place, below engines and resources.

Nothing else in the code base retries ad hoc: resources and engines ask this package for a
preconfigured policy for their dependency and say which of their exceptions are retryable.
"""

"""Retry, rate-limit and circuit-breaker policy: one place, below engines and resources.

Nothing else in the code base retries ad hoc: resources and engines ask this package for a
preconfigured policy for their dependency and say which of their exceptions are retryable.

- `retry.py`: the tenacity policy per dependency (S3, Athena, Triton, AppSync), retry counters;
- `rate_limit.py`: a token bucket per dependency, shared within a process;
- `aws_hooks.py`: the same policy and bucket inside botocore's request loop, for AWS calls that
  a library (pyathena) makes;
- `breaker.py`: circuit breakers (Triton).
See docs/reliability.md for the layers (request, step, run) and the knobs.
"""

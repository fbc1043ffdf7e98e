"""Pure domain logic: no Dagster imports, no network, no environment reads."""

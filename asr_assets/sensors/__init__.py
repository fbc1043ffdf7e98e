"""Sensors: new audio in the object store, and run-failure reporting."""

import dagster as dg

ALL_SENSORS: list[dg.SensorDefinition] = []

"""Sensors: new audio in the object store, and run-failure reporting."""

import dagster as dg

from asr_assets.sensors.new_audio import (
    SENSOR_NAME as NEW_AUDIO_SENSOR_NAME,
)
from asr_assets.sensors.new_audio import (
    NewAudioSettings,
    build_new_audio_sensor,
    new_audio_sensor,
)

ALL_SENSORS: list[dg.SensorDefinition] = [new_audio_sensor]


def configured_sensors(new_audio: NewAudioSettings) -> list[dg.SensorDefinition]:
    """ALL_SENSORS with the new-audio sensor rebuilt from the environment's settings."""
    return [
        build_new_audio_sensor(new_audio) if sensor.name == NEW_AUDIO_SENSOR_NAME else sensor
        for sensor in ALL_SENSORS
    ]

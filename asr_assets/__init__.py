"""asr-platform: batch letter scoring of read-aloud recordings as a Dagster code location.

Importing the package is cheap on purpose (no torch, no network): Dagster imports the code
location in every process it starts.
"""

__version__ = "0.1.0"

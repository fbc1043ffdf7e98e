"""Whether libespeak-ng (Debian `espeak-ng`, installed by `make system-deps`) can be loaded.

Synthesis tests skip without it, so a machine set up by hand still runs the rest; `make test`
installs it first, so CI never skips them.
"""

import ctypes
import ctypes.util

import pytest


def espeak_available() -> bool:
    try:
        ctypes.CDLL("libespeak-ng.so.1")
    except OSError:
        return ctypes.util.find_library("espeak-ng") is not None
    return True


needs_espeak = pytest.mark.skipif(not espeak_available(), reason="libespeak-ng not installed")


def mbrola_available() -> bool:
    from tools.synthesize.voices import mbrola_voices

    try:
        mbrola_voices()
    except FileNotFoundError:
        return False
    return espeak_available()


needs_mbrola = pytest.mark.skipif(
    not mbrola_available(), reason="mbrola or its databases not installed"
)

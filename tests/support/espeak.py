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

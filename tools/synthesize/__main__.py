"""``python -m tools.synthesize``: see :mod:`tools.synthesize.cli`."""

from tools.synthesize.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

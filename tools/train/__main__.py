"""``python -m tools.train``: see :mod:`tools.train.cli`."""

from tools.train.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m PIL_l3ic``: the ``l3ic`` command line (see PIL_l3ic/cli.py)."""
import sys

from PIL_l3ic.cli import main

if __name__ == "__main__":
    sys.exit(main())

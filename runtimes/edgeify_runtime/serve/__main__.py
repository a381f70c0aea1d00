"""``python -m edgeify_runtime.serve``."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":  # not when a spawned decode worker imports this module as __mp_main__
    sys.exit(main())

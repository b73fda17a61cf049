"""``python -m benchmarks``: see `benchmarks.cli`."""

from __future__ import annotations

import sys

from .cli import main

# Consumer processes use the spawn method, which re-imports this module as __mp_main__.
if __name__ == "__main__":
    sys.exit(main())

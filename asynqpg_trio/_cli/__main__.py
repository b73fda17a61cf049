"""``python -m asynqpg_trio._cli``: the command line."""

from __future__ import annotations

from ._main import main

if __name__ == "__main__":
    main()

"""The ``asynqpg-trio`` command line (console script ``asynqpg_trio._cli:main``).

`main` imports the command line only when called, so ``python -m asynqpg_trio._cli._web``
(the dashboard alone) does not import its own module twice.
"""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """The console script: run the command line and exit with its status."""
    from ._main import main as run_main

    run_main()

"""Exceptions raised by asynqpg-trio.

One class per meaning. Every error the library raises on purpose derives from
:class:`AsynqpgError`, so callers can catch the library's errors without catching
unrelated ones.
"""

from __future__ import annotations

__all__ = ["AsynqpgError", "IllegalTransition"]


class AsynqpgError(Exception):
    """Base class of every error asynqpg-trio raises deliberately.

    It is never raised itself. Errors from the database driver, from trio, or from a
    user's handler are not wrapped in it unless a subclass says so.
    """


class IllegalTransition(AsynqpgError):  # noqa: N818 (names the refusal, like h11)
    """A task state change that the state machine forbids was requested.

    Raised by the pure state machine (``asynqpg_trio._state.apply``) when no rule of the
    transition table allows ``event`` from the row's current status (for example,
    deleting a running task or cancelling a completed one). Fenced worker events never
    raise it: a stale lease token is a silent no-op, as in the SQL. The client layer
    maps this error to more specific ones before it reaches users.

    Attributes:
        event: The name of the refused event.
        status: The row's status when the event arrived, or ``None`` if the row does
            not exist.
    """

    def __init__(self, event: str, status: str | None) -> None:
        self.event = event
        self.status = status
        where = "a missing task" if status is None else f"a {status} task"
        super().__init__(f"event {event!r} is not allowed on {where}")

    def __reduce__(self) -> tuple[type[IllegalTransition], tuple[str, str | None]]:
        return (type(self), (self.event, self.status))

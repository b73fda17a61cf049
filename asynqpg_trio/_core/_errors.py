"""The exceptions asynqpg-trio raises.

Every error of ours derives from `AsynqpgError`, so ``except AsynqpgError`` catches exactly what
this library decided to raise.  Errors that PostgreSQL itself reports reach you as psycopg's
exception classes (``psycopg.errors.*``), unchanged, but for two that say something about the
setup rather than a statement: a database that cannot be reached is `ConnectionFailed`, and
one without the asynqpg schema is `SchemaMissing` (psycopg's error is the ``__cause__``).

Each class says it lives in ``asynqpg_trio`` (its ``__module__``), where users import it
from, so tracebacks name ``asynqpg_trio.SchemaMissing``, never a private module.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AsynqpgError",
    "AuthenticationFailed",
    "ConfigurationError",
    "ConnectionFailed",
    "ConsumerError",
    "DuplicateTask",
    "IllegalTransition",
    "InvalidQuery",
    "InvalidTask",
    "MigrationBlocked",
    "PayloadTooLarge",
    "SchemaError",
    "SchemaMissing",
    "SchemaTooNew",
    "TaskAlreadyAvailable",
    "TaskAlreadyFinalized",
    "TaskNotFound",
    "TaskRunning",
]


class AsynqpgError(Exception):
    """Base class of every error asynqpg-trio raises itself."""


class AuthenticationFailed(AsynqpgError):
    """A dashboard login provider refused or could not complete a login.

    Raised by an `asynqpg_trio.web.AuthProvider`'s ``complete`` (for example when the user
    denied access or the code exchange failed); the dashboard then sends the browser back to
    its login page.  Its message is logged, never shown to the browser.
    """


class ConfigurationError(AsynqpgError, ValueError):
    """A component was given a setting it cannot work with (raised at construction)."""


class ConnectionFailed(AsynqpgError):
    """The database could not be reached: the server is down or unreachable, or it refused
    the connection (unknown database or role, failed authentication).

    Raised by a pool (so by everything that takes a DSN or a pool) once its reconnection
    back-off (``reconnect_timeout``) is spent; the message is the last failure's, and the
    psycopg error is its ``__cause__``.  The exception raised is also a
    `psycopg.OperationalError`, so code that catches those keeps working.  Differs from
    `ConfigurationError`, which refuses a DSN that cannot even be parsed, before any I/O.
    """


class InvalidTask(AsynqpgError, ValueError):
    """A task given to the producer failed validation; nothing was written.

    For a batch, `index` is the position of the first invalid task, else None.
    """

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message if index is None else f"task at index {index}: {message}")
        self.index = index


class InvalidQuery(AsynqpgError, ValueError):
    """A `Client` method was given an argument it cannot use; nothing was run.

    Raised before any database work for an unknown status or order field, a naive
    datetime, a negative offset or one past 2**63-1, a task type with a NUL character, a
    task id that is not an int, or a malformed or mismatched page cursor.  Differs from
    `InvalidTask` (the producer's input) and from `TaskNotFound` (a well-formed id that
    names no task).
    """


class DuplicateTask(AsynqpgError):
    """Another task holds this task's place: its idempotency token, or its unique key.

    Raised by `Producer.enqueue` (and ``asynqpg_trio.sync.enqueue``) when a task of the same
    type holds the idempotency token, or holds the unique key (`Unique`) in one of its unique
    states; nothing was inserted.  Raised by `Client.retry_task` and `Client.cancel_task`
    when the move would put the task back into its unique states while another task holds
    its key; the task was left as it was.

    Attributes:
        task_type: the task's type.
        token: the idempotency token in question, or None (a unique key).
        unique_key: the unique key in question, or None (a token).
        existing_id: the id of the task that holds the place.
    """

    def __init__(
        self,
        task_type: str,
        token: str | None,
        existing_id: int,
        *,
        unique_key: str | None = None,
    ) -> None:
        what = f"idempotency token {token!r}" if token is not None else f"unique key {unique_key!r}"
        super().__init__(
            f"a task of type {task_type!r} with {what} already exists (id {existing_id})"
        )
        self.task_type: str = task_type
        self.token: str | None = token
        self.unique_key: str | None = unique_key
        self.existing_id: int = existing_id

    def __reduce__(self) -> tuple[Any, ...]:
        args = (self.task_type, self.token, self.existing_id)
        return (_duplicate_task, (*args, self.unique_key))


def _duplicate_task(
    task_type: str, token: str | None, existing_id: int, unique_key: str | None
) -> DuplicateTask:
    return DuplicateTask(task_type, token, existing_id, unique_key=unique_key)


class IllegalTransition(AsynqpgError):
    """A task state change that the state machine forbids was requested.

    Raised by the pure state machine (``asynqpg_trio._core._state.apply``) when no rule of the
    transition table allows ``event`` from the row's current status (for example, deleting a
    running task or cancelling a completed one).  Fenced worker events never raise it: a stale
    lease token is a silent no-op, as in the SQL.

    Attributes:
        event: The name of the refused event.
        status: The row's status when the event arrived, or ``None`` if the row does not exist.
    """

    def __init__(self, event: str, status: str | None) -> None:
        self.event = event
        self.status = status
        where = "a missing task" if status is None else f"a {status} task"
        super().__init__(f"event {event!r} is not allowed on {where}")

    def __reduce__(self) -> tuple[type[IllegalTransition], tuple[str, str | None]]:
        return (type(self), (self.event, self.status))


class TaskNotFound(AsynqpgError, LookupError):
    """The client asked for a task id that is not in the table."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"task {task_id} not found")
        self.task_id = task_id


class PayloadTooLarge(AsynqpgError):
    """`Client.get_payload` found a payload longer than the ``max_bytes`` it was given.

    Nothing of the payload was read.  Differs from `TaskNotFound` (there is no such task).

    Attributes:
        task_id: the task.
        size: the payload's length in bytes.
        max_bytes: the limit it is over.
    """

    def __init__(self, task_id: int, size: int, max_bytes: int) -> None:
        super().__init__(
            f"the payload of task {task_id} is {size} bytes, more than max_bytes={max_bytes}"
        )
        self.task_id = task_id
        self.size = size
        self.max_bytes = max_bytes


class _TaskStateError(AsynqpgError):
    """A client operation does not apply to the task's current status."""

    def __init__(self, message: str, task: object) -> None:
        super().__init__(message)
        #: The task as it is now (a `TaskRecord`).
        self.task = task


class TaskRunning(_TaskStateError):
    """The task is running, so it cannot be retried or deleted (cancel it first)."""


class TaskAlreadyFinalized(_TaskStateError):
    """The task is completed (or otherwise terminal) and the operation needs a live task."""


class TaskAlreadyAvailable(_TaskStateError):
    """Retry was asked for a task that is already pending."""


class SchemaError(AsynqpgError):
    """The database schema does not match what this version of asynqpg-trio needs."""


class SchemaMissing(SchemaError):
    """The asynqpg tables are not there: run ``asynqpg-trio migrate`` (or `migrate`)."""


class SchemaTooNew(SchemaError):
    """The database was migrated by a newer asynqpg-trio; upgrade this package."""


class MigrationBlocked(AsynqpgError):
    """`migrate` could not get the table locks a migration step needs.

    Raised by `migrate` when a transactional step waited ``lock_timeout`` for its locks, on
    every one of its attempts, because another session holds a conflicting lock (typically a
    long-running or idle-in-transaction session).  The step was rolled back; the versions and
    steps before it stay applied and recorded, and running `migrate` again resumes there.
    Differs from `SchemaError` and its subclasses, which say the schema itself is wrong: this
    one says the database was busy.
    """


class ConsumerError(AsynqpgError):
    """A consumer stopped because of a failure inside asynqpg-trio itself (a bug or an
    unrecoverable condition); the original exception group is its ``__cause__``."""


for _name in __all__:
    globals()[_name].__module__ = "asynqpg_trio"
del _name

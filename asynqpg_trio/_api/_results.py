"""The client's results: read a completed task's result, or wait for a task to finish.

`ResultReader` is a base of `Client` (so the client module stays about task management).
Waiting goes through the pool's waiter registry (``_waiters``): one LISTEN connection per
pool, however many tasks are waited for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._core._errors import TaskNotFound
from .._core._listing import check_task_id
from .._pg import _client_repo as repo
from ._queues import QueueAdmin
from ._waiters import wait_for_result, waiters_for

if TYPE_CHECKING:
    import psycopg

__all__ = ["ResultReader"]


class ResultReader(QueueAdmin):
    """Results and waiting, shared by `Client` (see there)."""

    async def get_result(
        self, task_id: int, *, conn: psycopg.AsyncConnection[Any] | None = None
    ) -> Any:
        """Return the result stored with a completed task: what its handler returned.

        Bytes come back as `bytes`, other values as `json.loads` gives them (a tuple comes
        back as a list), and None when the handler returned None, or when a Go consumer
        completed the task.  Results are deleted with their task by the completed-task
        retention (``completed_retention``).

        Raises:
            TaskNotFinished: the task is still pending or running (`wait` for it instead).
            TaskFailed: the task failed for good (``.message`` is its last error).
            TaskCancelled: the task was cancelled.
            TaskNotFound: no task has this id.
            InvalidQuery: ``task_id`` is not an int.

        Cancellation: a checkpoint; reads only.
        """
        task_id = check_task_id(task_id)
        async with self._connection(conn) as c:
            found = await repo.get_result(c, task_id)
        if found is None:
            raise TaskNotFound(task_id)
        return found.value()

    async def wait(self, task_id: int, *, cancel_on_cancel: bool = False) -> Any:
        """Wait until a task is finished; return its result, or raise its final error.

        Woken by a NOTIFY sent when the task finishes, never by polling; every wait on this
        client's pool shares one LISTEN connection, however many there are.  There is no
        ``timeout=``: bound the wait with ``trio.move_on_after`` / ``fail_after`` (or
        anyio's).

        Args:
            task_id: the task.
            cancel_on_cancel: structured cancellation across the queue: if this wait is
                cancelled (its cancel scope, a timeout around it), cancel the task too, as
                `Client.cancel_task` does (a pending task becomes cancelled; a running one's
                handler is cancelled by its consumer at once), before the cancellation goes
                on.  A task that is already finished is left as it is.

        Returns:
            What `get_result` returns once the task is completed.

        Raises:
            TaskFailed: the task failed for good (``.message`` is its last error).
            TaskCancelled: the task was cancelled.
            TaskNotFound: no task has this id (or it was deleted while waited for).
            InvalidQuery: ``task_id`` is not an int.

        Cancellation: a checkpoint; the database holds the task as it was (with
        ``cancel_on_cancel``, cancelled, unless it had finished), and the task is marked as
        waited for (its finish sends a NOTIFY).
        """
        task_id = check_task_id(task_id)
        return await wait_for_result(self._pool, task_id, cancel_on_cancel=cancel_on_cancel)

    def waiter_statistics(self) -> tuple[int, int, int]:
        """(tasks waited for now, LISTEN connections opened so far, notifications received)
        of this client's pool: every waiter of a pool shares its one LISTEN connection."""
        waiters = waiters_for(self._pool)
        return waiters.waiting, waiters.connections_opened, waiters.notifications

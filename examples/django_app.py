"""Django: enqueue on Django's own connection inside ``transaction.atomic()``, and run Django
code as a (sync) handler.

Django 4.2+ talks to PostgreSQL through psycopg 3, so `asynqpg_trio.sync.enqueue` takes
Django's connection itself: the task row is written in the transaction of your model writes,
committed with them or rolled back with them, and no second connection is opened.

Run: python examples/django_app.py DSN   (or set ASYNQPG_DSN; a database migrated with
``asynqpg-trio migrate``).  A real project puts `DATABASES` in its settings module; the
consumer runs in ``asynqpg-trio worker`` (or the `consume` function below) with Django set up.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import django
import trio
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from psycopg.conninfo import conninfo_to_dict

from asynqpg_trio import Handler, Task, TaskInfo, open_consumer
from asynqpg_trio.sync import enqueue

# -- enqueueing, in your views -----------------------------------------------------------

# --8<-- [start:enqueue]


def enqueue_in_django(task: Task) -> int:
    """Enqueue ``task`` on Django's default connection, inside its current transaction."""
    connection.ensure_connection()  # Django connects lazily
    return enqueue(connection.connection, task)  # the psycopg.Connection Django holds


def place_order(order_id: int, *, fail: bool = False) -> None:
    """A view's work: write the order and enqueue its confirmation, atomically."""
    with transaction.atomic():
        with connection.cursor() as cursor:  # or Order.objects.create(...)
            cursor.execute("INSERT INTO orders (id) VALUES (%s)", [order_id])
        enqueue_in_django(Task("order.confirm", str(order_id).encode()))
        if fail:
            raise RuntimeError(f"order {order_id}: payment refused")  # rolls both back


# --8<-- [end:enqueue]


# -- handling, in the worker ---------------------------------------------------------------

# --8<-- [start:handle]


def django_handler(fn: Any) -> Any:
    """Run a sync handler as Django runs a request: stale connections closed before and after
    (each worker thread has its own Django connection)."""

    def run(task: TaskInfo) -> None:
        close_old_connections()
        try:
            fn(task)
        finally:
            close_old_connections()

    return run


@django_handler
def confirm_order(task: TaskInfo) -> None:
    """A plain function using Django: the consumer runs it in a worker thread."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        (database,) = cursor.fetchone()
    print(f"confirmed order {task.payload.decode()} (Django on {database})")


# --8<-- [end:handle]


async def consume(dsn: str, count: int) -> None:
    """Process ``count`` tasks, then stop."""
    handlers = {"order.confirm": Handler(confirm_order, workers=2)}
    async with open_consumer(dsn, handlers=handlers, poll_interval=0.1) as consumer:
        while consumer.statistics().completed < count:
            await trio.sleep(0.05)


# -- a minimal Django ----------------------------------------------------------------------


def setup_django(dsn: str) -> None:
    """Configure Django's default database from a libpq DSN (settings.py does it in a real
    project)."""
    params = conninfo_to_dict(dsn)
    names = {"dbname": "NAME", "user": "USER", "password": "PASSWORD", "host": "HOST"}
    database: dict[str, Any] = {"ENGINE": "django.db.backends.postgresql", "OPTIONS": {}}
    for key, value in params.items():
        if key in names:
            database[names[key]] = value
        elif key == "port":
            database["PORT"] = str(value)
        else:
            database["OPTIONS"][key] = value
    settings.configure(DATABASES={"default": database}, USE_TZ=True)
    django.setup()


def main(dsn: str) -> None:
    setup_django(dsn)
    with connection.cursor() as cursor:  # this session's own table, gone when it ends
        cursor.execute("CREATE TEMP TABLE orders (id int PRIMARY KEY)")
    place_order(1)
    try:
        place_order(2, fail=True)
    except RuntimeError as error:
        print(f"rolled back: {error}")
    with connection.cursor() as cursor:
        cursor.execute("SELECT array_agg(id ORDER BY id) FROM orders")
        print("orders kept:", cursor.fetchone()[0])
    trio.run(consume, dsn, 1)
    print("done")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ["ASYNQPG_DSN"])

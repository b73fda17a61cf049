"""Errors users see name public classes only: type name, repr, traceback line, pickling."""

from __future__ import annotations

import pickle
import traceback

import psycopg
import pytest

import asynqpg_trio
from asynqpg_trio import Client, ConnectionFailed, SchemaMissing, open_pool

DEAD_DSN = "host=127.0.0.1 port=1 user=postgres"


def _shown(error: BaseException) -> str:
    """The line a traceback ends with for ``error``."""
    return traceback.format_exception_only(error)[-1]


def test_public_errors_say_they_live_in_the_package() -> None:
    errors = [
        obj
        for name in asynqpg_trio.__all__
        if isinstance(obj := getattr(asynqpg_trio, name), type) and issubclass(obj, BaseException)
    ]
    assert ConnectionFailed in errors
    for error in errors:
        assert error.__module__ == "asynqpg_trio", error
        assert getattr(asynqpg_trio, error.__qualname__) is error


async def test_unreachable_database_is_connection_failed_by_every_name() -> None:
    with pytest.raises(ConnectionFailed) as caught:
        async with open_pool(DEAD_DSN, reconnect_timeout=0):
            pass
    error = caught.value
    assert isinstance(error, psycopg.OperationalError)  # what the actors catch
    assert (type(error).__module__, type(error).__qualname__) == (
        "asynqpg_trio",
        "ConnectionFailed",
    )
    assert type(error).__name__ == "ConnectionFailed"
    assert repr(error).startswith("ConnectionFailed('connection failed: ")
    assert _shown(error).startswith("asynqpg_trio.ConnectionFailed: connection failed: ")
    assert "_pool" not in _shown(error)
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, ConnectionFailed)
    assert isinstance(copy, psycopg.OperationalError)
    assert (str(copy), type(copy).__name__) == (str(error), "ConnectionFailed")


async def test_missing_schema_names_the_public_class(empty_dsn: str) -> None:
    async with open_pool(empty_dsn) as pool:
        with pytest.raises(SchemaMissing) as caught:
            await Client(pool).stats()
    assert _shown(caught.value).startswith("asynqpg_trio.SchemaMissing: ")
    assert pickle.loads(pickle.dumps(caught.value)).args == caught.value.args

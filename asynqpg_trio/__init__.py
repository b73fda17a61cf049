"""asynqpg-trio: a PostgreSQL-backed task queue for Trio and anyio.

The public API lives here; every other module is private.
"""

from __future__ import annotations

from ._conn import Connection as Connection
from ._conn import connect as connect
from ._errors import AsynqpgError as AsynqpgError
from ._errors import ConfigurationError as ConfigurationError
from ._errors import ConsumerError as ConsumerError
from ._errors import DuplicateTask as DuplicateTask
from ._errors import IllegalTransition as IllegalTransition
from ._errors import InvalidTask as InvalidTask
from ._errors import SchemaError as SchemaError
from ._errors import SchemaMissing as SchemaMissing
from ._errors import SchemaTooNew as SchemaTooNew
from ._errors import TaskAlreadyAvailable as TaskAlreadyAvailable
from ._errors import TaskAlreadyFinalized as TaskAlreadyFinalized
from ._errors import TaskNotFound as TaskNotFound
from ._errors import TaskRunning as TaskRunning
from ._migrate import LATEST_VERSION as LATEST_VERSION
from ._migrate import migrate as migrate
from ._pool import Pool as Pool
from ._pool import PoolStatistics as PoolStatistics
from ._pool import open_pool as open_pool
from ._producer import Producer as Producer
from ._task import Task as Task
from ._task import TaskInfo as TaskInfo

__version__ = "0.1.0"

__all__ = (
    "LATEST_VERSION",
    "AsynqpgError",
    "ConfigurationError",
    "Connection",
    "ConsumerError",
    "DuplicateTask",
    "IllegalTransition",
    "InvalidTask",
    "Pool",
    "PoolStatistics",
    "Producer",
    "SchemaError",
    "SchemaMissing",
    "SchemaTooNew",
    "TaskAlreadyAvailable",
    "TaskAlreadyFinalized",
    "TaskNotFound",
    "TaskInfo",
    "TaskRunning",
    "Task",
    "connect",
    "migrate",
    "open_pool",
)

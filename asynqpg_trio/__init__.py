"""asynqpg-trio: a PostgreSQL-backed task queue for Trio and anyio.

The public API lives here; every other module is private.
"""

from __future__ import annotations

from ._api._client import Client as Client
from ._api._producer import Producer as Producer
from ._consumer._open import Consumer as Consumer
from ._consumer._open import open_consumer as open_consumer
from ._consumer._open import serve_consumer as serve_consumer
from ._core._config import ConsumerStatistics as ConsumerStatistics
from ._core._config import Handler as Handler
from ._core._errors import AsynqpgError as AsynqpgError
from ._core._errors import ConfigurationError as ConfigurationError
from ._core._errors import ConnectionFailed as ConnectionFailed
from ._core._errors import ConsumerError as ConsumerError
from ._core._errors import DuplicateTask as DuplicateTask
from ._core._errors import IllegalTransition as IllegalTransition
from ._core._errors import InvalidQuery as InvalidQuery
from ._core._errors import InvalidTask as InvalidTask
from ._core._errors import MigrationBlocked as MigrationBlocked
from ._core._errors import PayloadTooLarge as PayloadTooLarge
from ._core._errors import SchemaError as SchemaError
from ._core._errors import SchemaMissing as SchemaMissing
from ._core._errors import SchemaTooNew as SchemaTooNew
from ._core._errors import TaskAlreadyAvailable as TaskAlreadyAvailable
from ._core._errors import TaskAlreadyFinalized as TaskAlreadyFinalized
from ._core._errors import TaskNotFound as TaskNotFound
from ._core._errors import TaskRunning as TaskRunning
from ._core._metadata import TaskMetadata as TaskMetadata
from ._core._metadata import get_created_at as get_created_at
from ._core._metadata import get_max_retry as get_max_retry
from ._core._metadata import get_retry_count as get_retry_count
from ._core._metadata import get_task_id as get_task_id
from ._core._metadata import get_task_metadata as get_task_metadata
from ._core._metadata import with_task_metadata as with_task_metadata
from ._core._outcome import SkipRetry as SkipRetry
from ._core._outcome import TaskSnooze as TaskSnooze
from ._core._outcome import TaskSnoozeWithError as TaskSnoozeWithError
from ._core._policies import ConstantRetryPolicy as ConstantRetryPolicy
from ._core._policies import DefaultRetryPolicy as DefaultRetryPolicy
from ._core._progress import InvalidProgress as InvalidProgress
from ._core._progress import report_progress as report_progress
from ._core._queues import Limit as Limit
from ._core._queues import QueueInfo as QueueInfo
from ._core._records import QueueStats as QueueStats
from ._core._records import TaskPage as TaskPage
from ._core._records import TaskRecord as TaskRecord
from ._core._records import TaskSummary as TaskSummary
from ._core._records import ThroughputMinute as ThroughputMinute
from ._core._records import TypeStats as TypeStats
from ._core._results import ResultNotSerializable as ResultNotSerializable
from ._core._results import ResultTooLarge as ResultTooLarge
from ._core._results import TaskCancelled as TaskCancelled
from ._core._results import TaskFailed as TaskFailed
from ._core._results import TaskNotFinished as TaskNotFinished
from ._core._retry import RetryPolicy as RetryPolicy
from ._core._row import TaskStatus as TaskStatus
from ._core._schedule_spec import Schedule as Schedule
from ._core._task import DEFAULT_QUEUE as DEFAULT_QUEUE
from ._core._task import MAX_PRIORITY as MAX_PRIORITY
from ._core._task import MIN_PRIORITY as MIN_PRIORITY
from ._core._task import Task as Task
from ._core._task import TaskInfo as TaskInfo
from ._core._unique import Unique as Unique
from ._core._version import __version__ as __version__
from ._maintenance._config import MaintenanceConfig as MaintenanceConfig
from ._pg._conn import Connection as Connection
from ._pg._conn import connect as connect
from ._pg._migrate import LATEST_VERSION as LATEST_VERSION
from ._pg._migrate import migrate as migrate
from ._pg._pool import Pool as Pool
from ._pg._pool import PoolStatistics as PoolStatistics
from ._pg._pool import open_pool as open_pool

__all__ = (
    "AsynqpgError",
    "Client",
    "ConfigurationError",
    "Connection",
    "ConnectionFailed",
    "ConstantRetryPolicy",
    "Consumer",
    "ConsumerError",
    "ConsumerStatistics",
    "DEFAULT_QUEUE",
    "DefaultRetryPolicy",
    "DuplicateTask",
    "Handler",
    "IllegalTransition",
    "InvalidProgress",
    "InvalidQuery",
    "InvalidTask",
    "LATEST_VERSION",
    "Limit",
    "MAX_PRIORITY",
    "MIN_PRIORITY",
    "MaintenanceConfig",
    "MigrationBlocked",
    "PayloadTooLarge",
    "Pool",
    "PoolStatistics",
    "Producer",
    "QueueInfo",
    "QueueStats",
    "ResultNotSerializable",
    "ResultTooLarge",
    "RetryPolicy",
    "Schedule",
    "SchemaError",
    "SchemaMissing",
    "SchemaTooNew",
    "SkipRetry",
    "Task",
    "TaskAlreadyAvailable",
    "TaskAlreadyFinalized",
    "TaskCancelled",
    "TaskFailed",
    "TaskInfo",
    "TaskMetadata",
    "TaskNotFinished",
    "TaskNotFound",
    "TaskPage",
    "TaskRecord",
    "TaskRunning",
    "TaskSnooze",
    "TaskSnoozeWithError",
    "TaskStatus",
    "TaskSummary",
    "ThroughputMinute",
    "TypeStats",
    "Unique",
    "connect",
    "get_created_at",
    "get_max_retry",
    "get_retry_count",
    "get_task_id",
    "get_task_metadata",
    "migrate",
    "open_consumer",
    "open_pool",
    "report_progress",
    "serve_consumer",
    "with_task_metadata",
)

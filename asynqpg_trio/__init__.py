"""asynqpg-trio: a PostgreSQL-backed task queue for Trio and anyio.

The public API lives here; every other module is private.
"""

from __future__ import annotations

from ._client import Client as Client
from ._config import ConsumerStatistics as ConsumerStatistics
from ._config import Handler as Handler
from ._conn import Connection as Connection
from ._conn import connect as connect
from ._consumer import Consumer as Consumer
from ._consumer import open_consumer as open_consumer
from ._consumer import serve_consumer as serve_consumer
from ._errors import AsynqpgError as AsynqpgError
from ._errors import ConfigurationError as ConfigurationError
from ._errors import ConnectionFailed as ConnectionFailed
from ._errors import ConsumerError as ConsumerError
from ._errors import DuplicateTask as DuplicateTask
from ._errors import IllegalTransition as IllegalTransition
from ._errors import InvalidQuery as InvalidQuery
from ._errors import InvalidTask as InvalidTask
from ._errors import PayloadTooLarge as PayloadTooLarge
from ._errors import SchemaError as SchemaError
from ._errors import SchemaMissing as SchemaMissing
from ._errors import SchemaTooNew as SchemaTooNew
from ._errors import TaskAlreadyAvailable as TaskAlreadyAvailable
from ._errors import TaskAlreadyFinalized as TaskAlreadyFinalized
from ._errors import TaskNotFound as TaskNotFound
from ._errors import TaskRunning as TaskRunning
from ._maintenance import MaintenanceConfig as MaintenanceConfig
from ._metadata import TaskMetadata as TaskMetadata
from ._metadata import get_created_at as get_created_at
from ._metadata import get_max_retry as get_max_retry
from ._metadata import get_retry_count as get_retry_count
from ._metadata import get_task_id as get_task_id
from ._metadata import get_task_metadata as get_task_metadata
from ._metadata import with_task_metadata as with_task_metadata
from ._migrate import LATEST_VERSION as LATEST_VERSION
from ._migrate import migrate as migrate
from ._outcome import SkipRetry as SkipRetry
from ._outcome import TaskSnooze as TaskSnooze
from ._outcome import TaskSnoozeWithError as TaskSnoozeWithError
from ._policies import ConstantRetryPolicy as ConstantRetryPolicy
from ._policies import DefaultRetryPolicy as DefaultRetryPolicy
from ._pool import Pool as Pool
from ._pool import PoolStatistics as PoolStatistics
from ._pool import open_pool as open_pool
from ._producer import Producer as Producer
from ._records import QueueStats as QueueStats
from ._records import TaskPage as TaskPage
from ._records import TaskRecord as TaskRecord
from ._records import TaskSummary as TaskSummary
from ._records import ThroughputMinute as ThroughputMinute
from ._records import TypeStats as TypeStats
from ._retry import RetryPolicy as RetryPolicy
from ._row import TaskStatus as TaskStatus
from ._task import Task as Task
from ._task import TaskInfo as TaskInfo

__version__ = "0.1.0"

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
    "DefaultRetryPolicy",
    "DuplicateTask",
    "Handler",
    "IllegalTransition",
    "InvalidQuery",
    "InvalidTask",
    "LATEST_VERSION",
    "MaintenanceConfig",
    "PayloadTooLarge",
    "Pool",
    "PoolStatistics",
    "Producer",
    "QueueStats",
    "RetryPolicy",
    "SchemaError",
    "SchemaMissing",
    "SchemaTooNew",
    "SkipRetry",
    "Task",
    "TaskAlreadyAvailable",
    "TaskAlreadyFinalized",
    "TaskInfo",
    "TaskMetadata",
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
    "connect",
    "get_created_at",
    "get_max_retry",
    "get_retry_count",
    "get_task_id",
    "get_task_metadata",
    "migrate",
    "open_consumer",
    "open_pool",
    "serve_consumer",
    "with_task_metadata",
)

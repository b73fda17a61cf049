"""The queue gauges (depth and oldest pending age per type), fed from cached samples.

Theory of operation
-------------------
An observable gauge's callback is synchronous and may run on an exporter thread, so it never
touches the database.  It reads a cache that a small actor of each consumer (`_sampler`)
refreshes every ``queue_metrics_interval`` seconds, and only while someone reads the gauges (or
the consumer was given its own meter provider).  Instruments are registered once per meter, so
the gauges of every consumer sharing a provider go through one `_QueueBoard`.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import metrics

if TYPE_CHECKING:
    from opentelemetry.metrics import Observation

__all__ = ["QueueSampler"]

#: Gauges stop being refreshed this long after their last read.
_READ_WINDOW: Final = 600.0

_Attrs = dict[str, str]


class _QueueBoard:
    """The queue gauges of one meter provider, fed by the samplers of its consumers."""

    def __init__(self, meter: metrics.Meter) -> None:
        self._lock = threading.Lock()
        self._samplers: set[QueueSampler] = set()
        self._attrs: dict[str, _Attrs] = {}
        self.last_read: float = -math.inf
        meter.create_observable_gauge(
            "asynqpg.queue.depth",
            callbacks=[lambda options: self._observe(0)],
            unit="{task}",
            description="Pending tasks ready to run, per type (sampled)",
        )
        meter.create_observable_gauge(
            "asynqpg.queue.oldest_pending_age",
            callbacks=[lambda options: self._observe(1)],
            unit="s",
            description="How long the oldest ready pending task has waited, per type (sampled)",
        )

    def show(self, sampler: QueueSampler, shown: bool) -> None:
        """Put ``sampler`` on the gauges (``shown``) or take it off."""
        with self._lock:
            (self._samplers.add if shown else self._samplers.discard)(sampler)

    def _merged(self) -> dict[str, tuple[int, float]]:
        self.last_read = time.monotonic()
        with self._lock:
            samplers = sorted(self._samplers, key=lambda s: s.sampled_at)
        merged: dict[str, tuple[int, float]] = {}
        for sampler in samplers:  # the freshest sample of a type wins
            merged.update(sampler.values)
        return merged

    def _attr(self, task_type: str) -> _Attrs:
        found = self._attrs.get(task_type)
        if found is None:
            found = self._attrs[task_type] = {"task_type": task_type}
        return found

    def _observe(self, index: int) -> Iterable[Observation]:
        merged = self._merged()
        return [metrics.Observation(v[index], self._attr(t)) for t, v in merged.items()]


_BOARDS: weakref.WeakKeyDictionary[Any, _QueueBoard] = weakref.WeakKeyDictionary()


class QueueSampler:
    """One consumer's cached queue sample; ``with sampler:`` shows it on the gauges."""

    def __init__(self, board: _QueueBoard, types: tuple[str, ...], *, always: bool) -> None:
        """Prefer `for_provider`, which shares one board per meter provider."""
        self._board = board
        self._always = always
        self.types = types
        self.values: Mapping[str, tuple[int, float]] = {}
        self.sampled_at: float = -math.inf

    @classmethod
    def for_provider(
        cls, provider: Any, meter: metrics.Meter, types: Sequence[str], *, always: bool
    ) -> QueueSampler:
        """A sampler on the board of ``provider`` (registered on ``meter`` if it is new)."""
        board = _BOARDS.get(provider)
        if board is None:
            board = _BOARDS[provider] = _QueueBoard(meter)
        return cls(board, tuple(types), always=always)

    def __enter__(self) -> QueueSampler:
        self._board.show(self, True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._board.show(self, False)

    def wanted(self) -> bool:
        """Whether to refresh: the consumer has its own provider, or the gauges were read."""
        return self._always or time.monotonic() - self._board.last_read < _READ_WINDOW

    def update(self, rows: Iterable[tuple[str, int, float]]) -> None:
        """Replace the sample with (type, ready pending tasks, oldest ready age) rows."""
        self.values = {t: (int(depth), float(age)) for t, depth, age in rows}
        self.sampled_at = time.monotonic()

"""A TCP proxy on loopback that can freeze: connections stay open but no byte moves.

Theory of operation
-------------------
`FreezingProxy.serve` listens on an ephemeral loopback port and, for every client, opens a
connection to the target and pumps bytes both ways.  Each pump waits at the gate before it
forwards a chunk: while the proxy is frozen the gate is shut, so requests already sent are
held, replies are held, and new connections hang in their handshake, exactly as a stalled
network looks to both ends (no reset, no error).  `thaw` opens the gate and everything held
is delivered in order.  Cancelling `serve` closes every connection.

`freeze_when` arms a trigger instead: the proxy freezes just before passing on the first
server reply that matches, so the client stalls at a chosen point: `freeze_after_outcome_write`
when an outcome write's reply is on its way (the rows are written, the consumer does not know);
`freeze_on_bytes` when a reply carries given bytes (say, a marker payload the claim returns).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import trio
from psycopg import conninfo


def server_address(dsn: str) -> tuple[str, int]:
    """(host, port) of a DSN's server; a host starting with "/" is a Unix socket directory."""
    params = conninfo.conninfo_to_dict(dsn)
    host = str(params.get("host") or "/tmp")
    return host, int(params.get("port") or 5432)


class FreezingProxy:
    """Forward loopback connections to a PostgreSQL server (TCP or Unix socket); freeze on
    demand."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._open = trio.Event()
        self._open.set()
        self.port = 0
        self.connections = 0
        self._trigger_on: Callable[[bytes | bytearray], bool] | None = None

    @property
    def frozen(self) -> bool:
        """Whether bytes are being held."""
        return not self._open.is_set()

    def freeze(self) -> None:
        """Stop forwarding (idempotent)."""
        if not self.frozen:
            self._open = trio.Event()

    def freeze_when(self, match: Callable[[bytes | bytearray], bool]) -> None:
        """Freeze before passing on the next server reply chunk for which ``match`` is true."""
        self._trigger_on = match

    def freeze_after_outcome_write(self) -> None:
        """Freeze at the next reply to an outcome write (its columns: ``stale``, ``notified``):
        the rows are written, and the client does not know it."""
        self.freeze_when(lambda data: b"stale\x00" in data and b"notified\x00" in data)

    def freeze_on_bytes(self, marker: bytes) -> None:
        """Freeze at the next reply carrying ``marker``, raw or hex-encoded (text bytea)."""
        hexed = marker.hex().encode()
        self.freeze_when(lambda data: marker in data or hexed in data)

    def _trigger(self, data: bytes | bytearray) -> None:
        if self._trigger_on is not None and self._trigger_on(data):
            self._trigger_on = None
            self.freeze()

    def thaw(self) -> None:
        """Forward again, starting with what was held."""
        self._open.set()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept and forward until cancelled; reports the port it listens on."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        async with client:
            await self._gate()
            host, port = self._target
            server: trio.abc.Stream
            if host.startswith("/"):
                server = await trio.open_unix_socket(f"{host}/.s.PGSQL.{port}")
            else:
                server = await trio.open_tcp_stream(host, port)
            async with server, trio.open_nursery() as nursery:

                async def pump(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
                    # A closed or reset end is passed on only when not frozen, like data.
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        while data := await src.receive_some(65536):
                            if src is server:
                                self._trigger(data)
                            await self._gate()
                            await dst.send_all(data)
                    await self._gate()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(pump, client, server)
                nursery.start_soon(pump, server, client)

    async def _gate(self) -> None:
        while self.frozen:
            await self._open.wait()

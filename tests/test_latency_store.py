"""LatencyTracker samples shared across replicas through a real redis-server.

Each "replica" is a tracker with its own redis client and store; the store's
timeouts are generous, so a busy machine never sends these tests to local
tracking, except where the store is meant to be unreachable.
"""

from __future__ import annotations

import asyncio

import pytest

from routed_llm import LatencyTracker, RoutedLlm
from routed_llm.redis import RedisStore
from routed_llm.strategies import FallbackStrategy
from routed_llm.testing import ScriptedLlm
from tests.conftest import ClientFactory, collect, make_request, texts
from tests.fake_servers import ClosedPort


def replica(clients: ClientFactory, namespace: str, **options) -> LatencyTracker:
    options.setdefault("min_samples", 1)
    return LatencyTracker(store=RedisStore(clients(), namespace=namespace, timeout=5.0), **options)


async def test_samples_recorded_on_one_replica_are_read_by_another(clients, namespace):
    first, second = replica(clients, namespace), replica(clients, namespace)
    for seconds in (0.1, 0.2, 0.3):
        first.record("flash", seconds)

    await first.refresh()
    await second.refresh(["flash"])

    assert (second.quantile("flash", 0.0), second.quantile("flash", 1.0)) == (0.1, 0.3)


async def test_the_shared_samples_of_a_key_are_the_window_newest_from_every_replica(clients, namespace):
    first, second = replica(clients, namespace, window=4), replica(clients, namespace, window=4)
    for seconds in (9.0, 9.0, 0.1):
        first.record("flash", seconds)
    await first.refresh()
    for seconds in (0.2, 0.3, 0.4):
        second.record("flash", seconds)

    await second.refresh()

    assert (second.quantile("flash", 0.0), second.quantile("flash", 1.0)) == (0.1, 0.4)


class WatchedStore(RedisStore):
    """A RedisStore that says when a trip of samples has come back."""

    def __init__(self, *args, **options) -> None:
        super().__init__(*args, **options)
        self.shared = asyncio.Event()

    async def share_samples(self, new, keys, window):
        try:
            return await super().share_samples(new, keys, window)
        finally:
            self.shared.set()


async def test_recording_a_sample_brings_in_every_replicas_samples_without_a_refresh(clients, namespace):
    first = replica(clients, namespace)
    for seconds in (0.1, 0.2):
        first.record("flash", seconds)
    await first.refresh()
    store = WatchedStore(clients(), namespace=namespace, timeout=5.0)
    second = LatencyTracker(min_samples=3, store=store)

    second.record("flash", 0.3)
    await asyncio.wait_for(store.shared.wait(), timeout=30)

    assert (second.quantile("flash", 0.0), second.quantile("flash", 1.0)) == (0.1, 0.3)


async def test_what_a_routed_model_records_reaches_other_replicas(clients, namespace):
    serving = replica(clients, namespace)
    llm = RoutedLlm(
        models={"flash": ScriptedLlm(model="flash", script=lambda request: "hi")},
        router=FallbackStrategy(["flash"]),
        latency=serving,
    )
    assert texts(await collect(llm.generate_content_async(make_request()))) == ["hi"]
    other = replica(clients, namespace)

    await serving.refresh()
    await other.refresh(["flash"])

    assert other.quantile("flash", 0.5) == serving.quantile("flash", 0.5) is not None


async def test_shared_samples_hold_only_numbers_and_expire(clients, namespace):
    latency = replica(clients, namespace)
    latency.record("flash", 0.25)

    await latency.refresh()
    reader = clients()
    keys = [key.decode() async for key in reader.scan_iter(f"routed_llm:{{{namespace}}}:*")]

    assert keys == [f"routed_llm:{{{namespace}}}:latency:flash"]
    assert await reader.lrange(keys[0], 0, -1) == [b"0.25"]
    assert 0 < await reader.pttl(keys[0]) <= 3_600_000  # An hour after the last sample.


async def test_a_replica_with_another_namespace_shares_nothing(clients, namespace):
    first, other = replica(clients, namespace), replica(clients, f"{namespace}-other")
    first.record("flash", 0.1)

    await first.refresh()
    await other.refresh(["flash"])

    assert other.quantile("flash", 0.5) is None


async def test_with_redis_unreachable_samples_are_tracked_locally_and_calls_succeed(clients, namespace):
    store = RedisStore(clients(f"redis://127.0.0.1:{ClosedPort().port}/0"), namespace=namespace)
    latency = LatencyTracker(min_samples=1, store=store)
    llm = RoutedLlm(
        models={"flash": ScriptedLlm(model="flash", script=lambda request: "hi")},
        router=FallbackStrategy(["flash"]),
        latency=latency,
    )

    answers = [texts(await collect(llm.generate_content_async(make_request()))) for _ in range(3)]
    await latency.refresh()

    assert answers == [["hi"]] * 3
    assert latency.quantile("flash", 0.5) is not None
    assert not store.available


async def test_a_model_key_the_store_cannot_record_is_refused_at_construction(clients):
    latency = LatencyTracker(store=RedisStore(clients(), namespace="bot"))

    with pytest.raises(ValueError, match="cannot be recorded"):
        RoutedLlm(
            models={"my model": ScriptedLlm(model="a")},
            router=FallbackStrategy(["my model"]),
            latency=latency,
        )

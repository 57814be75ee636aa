"""Shared health and budgets through a real Redis Cluster of 3 masters.

The nodes are redis-server processes from the same binary as the other Redis
tests, started in cluster mode on free ports; the test gives each its slots
and joins them with redis-py commands (CLUSTER ADDSLOTS, CLUSTER MEET).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from redis.asyncio.cluster import RedisCluster

from routed_llm import Limit
from routed_llm.redis import RedisStore
from tests.redis_server import RedisServer, end_cooldown, start_cluster
from tests.test_replicas import Clock, Held, answering, ask, dead, replica

ClusterFactory = Callable[[], RedisCluster]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    nodes = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield nodes
    for node in nodes:
        node.stop()


@pytest.fixture
async def cluster_clients(cluster: list[RedisServer]) -> AsyncIterator[ClusterFactory]:
    made: list[RedisCluster] = []

    def make() -> RedisCluster:
        made.append(RedisCluster(host="127.0.0.1", port=cluster[len(made) % len(cluster)].port))
        return made[-1]

    yield make
    for client in made:
        await client.aclose()


def on_cluster(clients: ClusterFactory, namespace: str) -> RedisStore:
    return RedisStore(clients(), namespace=namespace, timeout=5.0)


async def test_failures_on_two_replicas_add_up_through_a_cluster(cluster_clients, namespace):
    clock = Clock()
    first_primary, second_primary = dead(), dead()
    first = replica(on_cluster(cluster_clients, namespace), clock, first_primary)
    second = replica(on_cluster(cluster_clients, namespace), clock, second_primary)

    await ask(first)
    await ask(second)  # Two failures in all: the threshold.
    answers = [await ask(first), await ask(second)]

    assert answers == [["backup"], ["backup"]]
    assert (len(first_primary.calls), len(second_primary.calls)) == (1, 1)


async def test_the_half_open_trial_goes_to_one_replica_at_a_time_through_a_cluster(
    cluster_clients, namespace
):
    opener = replica(on_cluster(cluster_clients, namespace), Clock(), dead())
    await ask(opener)
    await ask(opener)
    await end_cooldown(cluster_clients(), namespace, "primary")
    trial_primary = Held(model="p", started=asyncio.Event(), release=asyncio.Event(), text="recovered")
    in_flight = asyncio.create_task(
        ask(replica(on_cluster(cluster_clients, namespace), Clock(), trial_primary))
    )
    await trial_primary.started.wait()
    other_primary = answering("recovered")

    during = await ask(replica(on_cluster(cluster_clients, namespace), Clock(), other_primary))
    trial_primary.release.set()

    assert during == ["backup"]
    assert other_primary.calls == []
    assert await in_flight == ["recovered"]


async def test_a_budget_is_shared_through_a_cluster(cluster_clients, namespace):
    clock = Clock()
    limits = {"primary": Limit(rpm=3)}
    primaries = [answering("primary"), answering("primary")]
    replicas = [
        replica(on_cluster(cluster_clients, namespace), clock, primary, limits=limits)
        for primary in primaries
    ]

    answers = await asyncio.gather(*(ask(llm) for llm in replicas for _ in range(4)))

    assert sum(len(primary.calls) for primary in primaries) == 3
    assert sorted(answer for [answer] in answers) == ["backup"] * 5 + ["primary"] * 3


async def test_every_record_of_a_namespace_lives_in_one_cluster_slot(cluster_clients, namespace):
    clock = Clock()
    llm = replica(
        on_cluster(cluster_clients, namespace), clock, dead(), limits={"backup": Limit(rpm=10, tpm=100)}
    )
    await ask(llm)
    reader = cluster_clients()

    keys = [key async for key in reader.scan_iter(match=f"routed_llm:{{{namespace}}}:*")]

    assert len(keys) == 3  # primary's circuit, backup's requests, the replicas of this minute.
    assert len({reader.keyslot(key) for key in keys}) == 1

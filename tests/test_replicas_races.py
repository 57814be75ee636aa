"""Shared health and budgets under races, a stalled or restarted Redis, clock skew and foreign keys.

Against a real redis-server, as tests/test_replicas.py. Shared cooldowns run on
Redis's clock, so a test ends one by rewriting the record's end (``end_cooldown``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator

import pytest
import redis.asyncio
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from pydantic import ConfigDict

from routed_llm import CircuitOpen, HealthTracker, Limit, RoutedLlm
from routed_llm.redis import RedisStore
from routed_llm.strategies import FallbackStrategy
from tests.conftest import in_order
from tests.fake_servers import ClosedPort
from tests.redis_server import RedisServer, end_cooldown, stalled
from tests.test_replicas import Clock, Held, answering, ask, dead, replica, store


def held() -> Held:
    return Held(model="p", started=asyncio.Event(), release=asyncio.Event(), text="recovered")


async def open_shared_circuit(clients, namespace: str) -> None:
    """Opens primary's shared circuit (two failures) and ends its cooldown: half-open, trial free."""
    opener = replica(store(clients, namespace), Clock(), dead())
    await ask(opener)
    await ask(opener)
    await end_cooldown(clients(), namespace, "primary")


def single_key(model: BaseLlm, health: HealthTracker) -> RoutedLlm:
    return RoutedLlm(models={"primary": model}, router=FallbackStrategy(["primary"]), health=health)


# 1. One trial at a time with a store.


class Gate(BaseLlm):
    """A dead primary that takes its time: each call waits for ``opened``, then fails."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    entered: asyncio.Event
    opened: asyncio.Event
    waiting: int = 0

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        self.waiting += 1
        self.entered.set()
        await self.opened.wait()
        raise ConnectionError("primary is down")
        yield  # A generator that never yields.


async def until_every_call_answered_or_waits_on(gate: Gate, calls: list[asyncio.Task[list[str]]]) -> None:
    pending = set(calls)
    while len(pending) > gate.waiting:
        entered = asyncio.ensure_future(gate.entered.wait())
        done, _ = await asyncio.wait({*pending, entered}, return_when=asyncio.FIRST_COMPLETED)
        entered.cancel()
        gate.entered.clear()
        pending -= done


async def test_twenty_concurrent_calls_at_the_end_of_a_cooldown_send_one_trial(clients, namespace):
    await open_shared_circuit(clients, namespace)
    primary = Gate(model="p", entered=asyncio.Event(), opened=asyncio.Event())
    llm = replica(store(clients, namespace), Clock(), primary)

    calls = [asyncio.create_task(ask(llm)) for _ in range(20)]
    await until_every_call_answered_or_waits_on(primary, calls)
    trials = primary.waiting
    primary.opened.set()
    answers = await asyncio.gather(*calls)

    assert trials == 1
    assert answers == [["backup"]] * 20


async def test_four_replicas_at_the_end_of_a_cooldown_send_one_trial_between_them(clients, namespace):
    await open_shared_circuit(clients, namespace)
    primaries = [dead() for _ in range(4)]
    replicas = [replica(store(clients, namespace), Clock(), primary) for primary in primaries]

    answers = await asyncio.gather(*(ask(llm) for llm in replicas))

    assert answers == [["backup"]] * 4
    assert sum(len(primary.calls) for primary in primaries) == 1


async def test_a_pick_whose_trial_another_replica_holds_goes_back_to_the_router_as_circuit_open(
    clients, namespace
):
    await open_shared_circuit(clients, namespace)
    trial_primary = held()
    in_flight = asyncio.create_task(ask(replica(store(clients, namespace), Clock(), trial_primary)))
    await trial_primary.started.wait()
    clock = Clock()
    router = in_order(["primary", "backup"])  # Picks primary whatever its health says.
    other_primary = answering("primary")

    answer = await ask(replica(store(clients, namespace), clock, other_primary, router=router))
    trial_primary.release.set()
    await in_flight

    error = router.seen[1].last_error
    assert answer == ["backup"]
    assert other_primary.calls == []
    assert isinstance(error, CircuitOpen)
    assert error.key == "primary"
    assert clock.now < error.retry_at <= clock.now + 60.0  # When the trial permit lapses, at the latest.


async def test_without_a_store_a_pick_whose_trial_is_in_flight_goes_back_to_the_router_as_circuit_open():
    clock = Clock()
    health = HealthTracker(failure_threshold=1, cooldown=30.0, clock=clock)
    primary = held()
    router = in_order(["primary", "backup"])
    llm = RoutedLlm(models={"primary": primary, "backup": answering("backup")}, router=router, health=health)
    primary.release.set()
    health.record_failure("primary", ConnectionError("down"), "transient")
    clock.now += 30.0  # Half-open.
    primary.release.clear()
    in_flight = asyncio.create_task(ask(llm))
    await primary.started.wait()

    answer = await ask(llm)
    primary.release.set()
    await in_flight

    assert answer == ["backup"]
    assert isinstance(router.seen[-1].last_error, CircuitOpen)


async def test_when_no_other_routed_key_is_available_the_picked_key_is_tried_anyway():
    clock = Clock()
    health = HealthTracker(failure_threshold=1, cooldown=30.0, clock=clock)
    health.record_failure("primary", ConnectionError("down"), "transient")
    clock.now += 30.0  # Half-open.
    primary = held()
    llm = single_key(primary, health)
    first = asyncio.create_task(ask(llm))  # Takes the trial, and waits.
    await primary.started.wait()
    primary.started.clear()

    second = asyncio.create_task(ask(llm))
    await primary.started.wait()  # Sent although the trial is taken: nothing else could serve.
    primary.release.set()

    assert [await first, await second] == [["recovered"], ["recovered"]]


# 2. Permits are owned.


async def test_a_cancelled_call_that_never_held_the_trial_leaves_it_with_its_holder():
    clock = Clock()
    health = HealthTracker(failure_threshold=1, cooldown=30.0, clock=clock)
    health.record_failure("primary", ConnectionError("down"), "transient")
    clock.now += 30.0
    primary = held()
    llm = single_key(primary, health)
    holder = asyncio.create_task(ask(llm))
    await primary.started.wait()
    primary.started.clear()
    other = asyncio.create_task(ask(llm))  # No trial for it: nothing else could serve.
    await primary.started.wait()

    other.cancel()
    with pytest.raises(asyncio.CancelledError):
        await other
    available = health.is_available("primary")
    primary.release.set()
    await holder

    assert available is False  # The trial is still the holder's.


async def test_a_cancelled_call_that_never_held_the_shared_trial_leaves_it_with_its_holder(
    clients, namespace
):
    await open_shared_circuit(clients, namespace)
    shared = store(clients, namespace)
    primary = held()
    llm = single_key(primary, HealthTracker(failure_threshold=2, cooldown=30.0, clock=Clock(), store=shared))
    holder = asyncio.create_task(ask(llm))
    await primary.started.wait()
    primary.started.clear()
    other = asyncio.create_task(ask(llm))
    await primary.started.wait()

    other.cancel()
    with pytest.raises(asyncio.CancelledError):
        await other
    await shared.drain()
    elsewhere = HealthTracker(
        failure_threshold=2, cooldown=30.0, clock=Clock(), store=store(clients, namespace)
    )
    await elsewhere.refresh(["primary"])
    available = elsewhere.is_available("primary")
    primary.release.set()
    await holder

    assert available is False


async def test_a_shared_trial_permit_never_given_back_lapses_after_the_trial_timeout(clients, namespace):
    await open_shared_circuit(clients, namespace)
    lost = held()  # Its call never ends, as with a replica that crashed holding the trial.
    in_flight = asyncio.create_task(ask(replica(store(clients, namespace), Clock(), lost)))
    await lost.started.wait()
    clock = Clock()
    elsewhere = HealthTracker(
        cooldown=30.0, max_cooldown=600.0, trial_timeout=60.0, clock=clock, store=store(clients, namespace)
    )

    await elsewhere.refresh(["primary"])
    in_flight.cancel()

    assert 0.0 < elsewhere.available_at("primary") - clock.now <= 60.0


# 3. A success is never lost to a Redis blip.


async def test_a_trial_success_during_a_redis_stall_closes_the_shared_circuit_once_redis_answers(
    clients, namespace
):
    await open_shared_circuit(clients, namespace)
    admin = clients()
    stalls = RedisStore(clients(), namespace=namespace, timeout=0.2, retry_interval=0)
    trial_primary = held()
    trial = replica(stalls, Clock(), trial_primary)
    in_flight = asyncio.create_task(ask(trial))
    await trial_primary.started.wait()

    async with stalled(admin):
        trial_primary.release.set()
        answer = await in_flight  # The trial succeeds; Redis does not take the news in time.
        await stalls.drain()
    await ask(trial)  # Redis answers again.
    later_primary = answering("recovered")
    later = await ask(replica(store(clients, namespace), Clock(), later_primary))

    assert answer == ["recovered"]
    assert later == ["recovered"]


async def test_a_change_told_late_does_not_undo_a_newer_one(clients, namespace):
    await open_shared_circuit(clients, namespace)
    admin = clients()
    stalls = RedisStore(clients(), namespace=namespace, timeout=0.2, retry_interval=0)
    clock = Clock()
    late = replica(stalls, clock, answering("recovered"))
    async with stalled(admin):
        missed = await ask(late)  # Served on local tracking; its success is not written.
        await stalls.drain()
    clock.now += 5.0  # The success is 5 s old when Redis answers again...
    opener = replica(store(clients, namespace), Clock(), dead())
    await ask(opener)
    await ask(opener)  # ...and the circuit opened again since.

    after = await ask(late)

    assert missed == ["recovered"]
    assert after == ["backup"]  # The newer opening stands.


# 4. Shared time is Redis's time.


async def test_a_replica_whose_wall_clock_is_300_s_fast_opens_a_30_s_cooldown_for_everyone(
    clients, namespace
):
    skewed = HealthTracker(
        failure_threshold=1,
        cooldown=30.0,
        wall_clock=lambda: time.time() + 300.0,
        store=store(clients, namespace),
    )
    await ask(
        RoutedLlm(
            models={"primary": dead(), "backup": answering("backup")},
            router=FallbackStrategy(["primary", "backup"]),
            health=skewed,
        )
    )
    clock = Clock(now=1000.0)
    health = HealthTracker(clock=clock, store=store(clients, namespace))

    await ask(
        RoutedLlm(
            models={"primary": dead(), "backup": answering("backup")},
            router=FallbackStrategy(["primary", "backup"]),
            health=health,
        )
    )

    assert health.state("primary") == "open"
    assert 0.0 < health.available_at("primary") - clock.now <= 30.0


# 5. Counts never go backwards.


@pytest.fixture
async def restartable(tmp_path):
    server = RedisServer(tmp_path).start()
    made: list[redis.asyncio.Redis] = []

    def client() -> redis.asyncio.Redis:
        made.append(redis.asyncio.Redis.from_url(server.url))
        return made[-1]

    yield server, client
    server.stop()
    for each in made:
        await each.aclose()


def restarting_store(client: redis.asyncio.Redis, namespace: str) -> RedisStore:
    return RedisStore(client, namespace=namespace, timeout=5.0, retry_interval=0)


async def test_a_replica_does_not_forget_the_requests_it_spent_when_redis_restarts(restartable, namespace):
    server, client = restartable
    llm = replica(
        restarting_store(client(), namespace), Clock(), answering("primary"), limits={"primary": Limit(rpm=5)}
    )
    before = [await ask(llm) for _ in range(5)]

    server.stop()
    server.start()  # Empty: its counts went with it.
    after = [await ask(llm) for _ in range(5)]

    assert before == [["primary"]] * 5
    assert after == [["backup"]] * 5


async def test_a_restarted_redis_is_brought_back_up_to_the_count_a_replica_knows(restartable, namespace):
    server, client = restartable
    clock = Clock()
    limits = {"primary": Limit(rpm=2)}
    knows = restarting_store(client(), namespace)
    llm = replica(knows, clock, answering("primary"), limits=limits)
    await ask(llm)
    await ask(llm)
    server.stop()
    server.start()
    await ask(llm)  # Finds its old connection closed (redis-py reconnects on the next trip).
    await ask(llm)  # Reads the empty store, and brings it up to 2.
    await knows.drain()
    newcomer_primary = answering("primary")

    answer = await ask(replica(restarting_store(client(), namespace), clock, newcomer_primary, limits=limits))

    assert answer == ["backup"]
    assert newcomer_primary.calls == []


# 6. During an outage, a replica admits only its share.


async def test_during_a_redis_outage_a_replica_admits_only_its_share_of_the_budget(restartable, namespace):
    server, client = restartable
    clock = Clock()
    limits = {"primary": Limit(rpm=12)}
    replicas = [
        replica(restarting_store(client(), namespace), clock, answering("primary"), limits=limits)
        for _ in range(4)
    ]
    for llm in replicas:
        await ask(llm)  # Four replicas reserved this minute: a share is 12 // 4 = 3.
    await ask(replicas[0])  # Its second; it reads that four replicas share the budget.

    server.stop()
    during = [await ask(replicas[0]) for _ in range(4)]

    assert during == [["primary"]] + [["backup"]] * 3


async def test_a_replica_that_never_reached_redis_admits_nothing_on_a_limited_key(clients, namespace):
    unreachable = RedisStore(clients(f"redis://127.0.0.1:{ClosedPort().port}/0"), namespace=namespace)
    primary = answering("primary")
    llm = replica(unreachable, Clock(), primary, limits={"primary": Limit(rpm=100)})

    answer = await ask(llm)  # It cannot know its share of the budget.

    assert answer == ["backup"]
    assert primary.calls == []


async def test_what_a_replica_admitted_during_an_outage_counts_once_redis_answers(restartable, namespace):
    _, client = restartable
    clock = Clock()
    limits = {"primary": Limit(rpm=6)}
    stalls = RedisStore(client(), namespace=namespace, timeout=0.2, retry_interval=0)
    first = replica(stalls, clock, answering("primary"), limits=limits)
    second = replica(restarting_store(client(), namespace), clock, answering("primary"), limits=limits)
    await ask(first)
    await ask(second)
    await ask(first)  # 3 spent; it knows two replicas share the budget: its share is 3.
    async with stalled(client()):
        during = await ask(first)  # Admitted on its own: its third, within its share.
        await stalls.drain()
    await ask(first)  # Redis answers again: 3 + the one it owes + this one.

    after = [await ask(second), await ask(second)]

    assert during == ["primary"]
    assert after == [["primary"], ["backup"]]  # 6 in all, not 7.


# 8. A foreign key does not disable sharing.


async def test_a_foreign_key_in_the_namespace_does_not_hide_circuits_other_replicas_opened(
    clients, namespace, caplog
):
    foreign = f"routed_llm:{{{namespace}}}:circuit:backup"
    await clients().set(foreign, "written by something else")
    opener = replica(store(clients, namespace), Clock(), dead())
    await ask(opener)
    await ask(opener)  # Opens primary for everyone.
    later_primary = answering("primary")
    later = replica(store(clients, namespace), Clock(), later_primary)
    caplog.clear()

    with caplog.at_level(logging.WARNING, logger="routed_llm.redis"):
        answers = [await ask(later), await ask(later)]

    assert answers == [["backup"], ["backup"]]
    assert later_primary.calls == []
    warnings = [record.getMessage() for record in caplog.records if record.name == "routed_llm.redis"]
    assert len(warnings) == 1  # Once per store: each process warns once.
    assert foreign in warnings[0]


async def test_a_foreign_record_is_replaced_by_the_next_good_write(clients, namespace):
    foreign = f"routed_llm:{{{namespace}}}:circuit:primary"
    await clients().set(foreign, "written by something else")
    llm = replica(store(clients, namespace), Clock(), dead())

    await ask(llm)  # A failure of primary: written over the foreign record.

    assert await clients().type(foreign) == b"hash"


async def test_a_budget_counter_that_is_not_a_number_is_counted_from_zero_and_rewritten(clients, namespace):
    clock = Clock()
    await clients().set(f"routed_llm:{{{namespace}}}:requests:primary:{int(clock.now // 60)}", "not a number")
    limits = {"primary": Limit(rpm=1)}
    first_primary, second_primary = answering("primary"), answering("primary")

    first = await ask(replica(store(clients, namespace), clock, first_primary, limits=limits))
    second = await ask(replica(store(clients, namespace), clock, second_primary, limits=limits))

    assert (first, second) == (["primary"], ["backup"])  # The second replica saw the first one's count.


# 9. Inputs are validated.


@pytest.mark.parametrize("argument", ["max_cooldown", "trial_timeout"])
async def test_a_duration_a_store_cannot_keep_is_refused_at_construction(clients, namespace, argument):
    with pytest.raises(ValueError, match=argument):
        HealthTracker(**{argument: 5e13}, store=store(clients, namespace))


# Found in review: reconciliation under concurrency.


async def test_a_change_redis_missed_is_made_once_when_two_reads_reconcile_at_once(clients, namespace):
    admin = clients()
    stalls = RedisStore(clients(), namespace=namespace, timeout=0.2, retry_interval=0)
    health = HealthTracker(failure_threshold=3, clock=Clock(), store=stalls)
    llm = RoutedLlm(
        models={"primary": dead(), "backup": answering("backup")},
        router=FallbackStrategy(["primary", "backup"]),
        health=health,
    )
    async with stalled(admin):
        await ask(llm)  # One failure of primary, which Redis does not take.
        await stalls.drain()

    await asyncio.gather(health.refresh(["primary"]), health.refresh(["primary", "backup"]))

    assert await admin.hget(f"routed_llm:{{{namespace}}}:circuit:primary", "failures") == b"1"

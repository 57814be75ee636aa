"""Review of shared health and budgets (issue 19): what broke them, against a real redis-server.

Each "replica" is a RoutedLlm with its own redis client, tracker and limits, as in
tests/test_replicas.py, whose fixtures and helpers these tests share.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from routed_llm import HealthTracker, LatencyTracker, Limit, RateLimits, RoutedLlm
from routed_llm.redis import RedisStore
from routed_llm.store import BudgetChange, BudgetReading, CircuitChange, CircuitReading
from routed_llm.strategies import FallbackStrategy
from routed_llm.testing import ScriptedLlm
from tests import test_replicas
from tests.redis_server import stalled
from tests.test_replicas import Clock, Held, answering, ask, replica, store
from tests.test_replicas_races import Gate, open_shared_circuit, until_every_call_answered_or_waits_on


def rate_limited(retry_after: str) -> ScriptedLlm:
    """A primary that answers 429, saying how long to wait, then serves."""
    request = httpx.Request("POST", "http://127.0.0.1/v1")
    errors = [
        httpx.HTTPStatusError(
            "429 Too Many Requests",
            request=request,
            response=httpx.Response(429, headers={"Retry-After": retry_after}, request=request),
        )
    ]
    return ScriptedLlm(model="p", script=lambda _: errors.pop() if errors else "primary")


async def test_a_retry_after_told_late_opens_the_circuit_only_for_what_is_left_of_its_wait(
    clients, namespace
):
    admin = clients()
    clock = Clock()
    stalls = RedisStore(clients(), namespace=namespace, timeout=0.2, retry_interval=0)
    late = replica(stalls, clock, rate_limited("5"))
    async with stalled(admin):
        during = await ask(late)  # The 429 is not written: Redis does not answer in time.
        await stalls.drain()
    clock.now += 100.0  # Its wait of 5 s ended long ago when Redis answers again.
    await ask(late)
    elsewhere_primary = answering("primary")

    elsewhere = await ask(replica(store(clients, namespace), Clock(), elsewhere_primary))

    assert during == ["backup"]
    assert elsewhere == ["primary"]


class AnswerLost:
    """A RedisStore whose answers to trial acquisitions never arrive: Redis applies them, the caller waits."""

    def __init__(self, inner: RedisStore) -> None:
        self.inner = inner
        self.applied = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def change_circuit(self, key: str, change: CircuitChange) -> tuple[CircuitReading, bool] | None:
        answer = await self.inner.change_circuit(key, change)
        if change.op == "acquire":
            self.applied.set()
            await asyncio.Event().wait()  # Nobody sets it: the reply is still on its way.
        return answer


def trial_replica(health: HealthTracker, primary: ScriptedLlm) -> RoutedLlm:
    return RoutedLlm(
        models={"primary": primary, "backup": answering("backup")},
        router=FallbackStrategy(["primary", "backup"]),
        health=health,
    )


async def test_a_call_cancelled_while_taking_the_trial_gives_it_back_here_and_in_redis(clients, namespace):
    await open_shared_circuit(clients, namespace)
    shared = store(clients, namespace)
    lost = AnswerLost(shared)
    health = HealthTracker(failure_threshold=2, cooldown=30.0, clock=Clock(), store=lost)  # type: ignore[arg-type]
    call = asyncio.create_task(ask(trial_replica(health, answering("primary"))))
    await lost.applied.wait()

    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await shared.drain()
    here = health.is_available("primary")
    elsewhere = await ask(replica(store(clients, namespace), Clock(), answering("primary")))

    assert here is True
    assert elsewhere == ["primary"]


@pytest.mark.parametrize(
    "foreign",
    [
        pytest.param(lambda admin, key: admin.set(key, "not a list"), id="another type"),
        pytest.param(lambda admin, key: admin.rpush(key, "fast", "nan"), id="samples that are not numbers"),
    ],
)
async def test_a_foreign_latency_list_does_not_stop_a_replica_sharing_health(clients, namespace, foreign):
    await foreign(clients(), f"routed_llm:{{{namespace}}}:latency:primary")
    shared = store(clients, namespace, retry_interval=600.0)
    latency = LatencyTracker(store=shared)
    primary = answering("primary")
    llm = RoutedLlm(
        models={"primary": primary, "backup": answering("backup")},
        router=FallbackStrategy(["primary", "backup"]),
        health=HealthTracker(failure_threshold=2, cooldown=30.0, clock=Clock(), store=shared),
        latency=latency,
    )
    first = await ask(llm)
    await latency.refresh()  # Its samples meet the foreign record.
    opener = replica(store(clients, namespace), Clock(), test_replicas.dead())
    await ask(opener)
    await ask(opener)  # Primary's circuit is open for every replica.

    after = await ask(llm)

    assert first == ["primary"]
    assert after == ["backup"]
    assert len(primary.calls) == 1


async def test_a_trial_taken_while_redis_stalled_is_not_given_to_a_second_call_once_redis_answers(
    clients, namespace
):
    await open_shared_circuit(clients, namespace)
    admin = clients()
    stalls = RedisStore(clients(), namespace=namespace, timeout=0.2, retry_interval=0)
    health = HealthTracker(failure_threshold=2, cooldown=30.0, clock=Clock(), store=stalls)
    await health.refresh(["primary"])  # This replica knows the trial is free.
    primary = Gate(model="p", entered=asyncio.Event(), opened=asyncio.Event())
    llm = trial_replica(health, primary)
    async with stalled(admin):
        first = asyncio.create_task(ask(llm))  # Takes the trial on local tracking.
        await primary.entered.wait()
    second = asyncio.create_task(ask(llm))  # Redis answers again.

    await until_every_call_answered_or_waits_on(primary, [first, second])
    trials = primary.waiting
    primary.opened.set()
    answers = await asyncio.gather(first, second)

    assert trials == 1
    assert answers == [["backup"], ["backup"]]


class FirstLateChangeStuck:
    """A RedisStore on which the first change told late never arrives (nor is applied); later ones do."""

    def __init__(self, inner: RedisStore) -> None:
        self.inner = inner
        self.stuck = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def change_circuit(self, key: str, change: CircuitChange) -> tuple[CircuitReading, bool] | None:
        if change.age > 0 and not self.stuck.is_set():
            self.stuck.set()
            await asyncio.Event().wait()  # Nobody sets it: Redis is slow to take it.
        return await self.inner.change_circuit(key, change)


async def test_a_change_redis_missed_survives_a_call_cancelled_while_it_is_being_made(clients, namespace):
    await open_shared_circuit(clients, namespace)
    admin = clients()
    stalls = RedisStore(clients(), namespace=namespace, timeout=0.2, retry_interval=0)
    stuck = FirstLateChangeStuck(stalls)
    health = HealthTracker(failure_threshold=2, cooldown=30.0, clock=Clock(), store=stuck)  # type: ignore[arg-type]
    trial_primary = Held(model="p", started=asyncio.Event(), release=asyncio.Event(), text="recovered")
    trial = trial_replica(health, trial_primary)
    in_flight = asyncio.create_task(ask(trial))
    await trial_primary.started.wait()
    async with stalled(admin):
        trial_primary.release.set()
        await in_flight  # The trial succeeds; Redis does not take the news in time.
        await stalls.drain()
    cancelled = asyncio.create_task(ask(trial))  # Redis answers again; this call makes the change...
    await stuck.stuck.wait()
    cancelled.cancel()  # ...and is cancelled before Redis took it.
    with pytest.raises(asyncio.CancelledError):
        await cancelled

    await ask(trial)
    later = await ask(replica(store(clients, namespace), Clock(), answering("recovered")))

    assert later == ["recovered"]


class FirstOwedCountStuck:
    """A RedisStore on which the first change carrying owed requests never arrives (nor is applied)."""

    def __init__(self, inner: RedisStore) -> None:
        self.inner = inner
        self.stuck = asyncio.Event()
        self.task: asyncio.Task[object] | None = None

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def change_budget(self, key: str, change: BudgetChange) -> BudgetReading | None:
        if change.owed_requests and not self.stuck.is_set():
            self.task = asyncio.current_task()
            self.stuck.set()
            await asyncio.Event().wait()  # Nobody sets it: Redis is slow to take it.
        return await self.inner.change_budget(key, change)


async def test_requests_admitted_during_an_outage_still_count_after_their_write_is_cancelled(
    clients, namespace
):
    clock = Clock()
    limits = {"primary": Limit(rpm=6)}
    stalls = RedisStore(clients(), namespace=namespace, timeout=0.2, retry_interval=0)
    stuck = FirstOwedCountStuck(stalls)
    first = RoutedLlm(
        models={"primary": answering("primary"), "backup": answering("backup")},
        router=FallbackStrategy(["primary", "backup"]),
        limits=RateLimits(limits, store=stuck, clock=clock),  # type: ignore[arg-type]
    )
    second = replica(store(clients, namespace), clock, answering("primary"), limits=limits)
    answers = [await ask(first), await ask(second), await ask(first)]  # Its share is 6 // 2 = 3.
    async with stalled(clients()):
        answers.append(await ask(first))  # Admitted on its own: it owes Redis one request.
        await stalls.drain()
    after_stall = asyncio.create_task(ask(first))  # Redis answers again; the owed request is on its way...
    await stuck.stuck.wait()
    assert stuck.task is not None
    stuck.task.cancel()  # ...when the task carrying it (this call, or a background write) is cancelled.
    with pytest.raises(asyncio.CancelledError):
        await stuck.task
    if not after_stall.cancelled():
        answers.append(await after_stall)

    answers += [await ask(first), await ask(second), await ask(second), await ask(second)]

    assert answers.count(["primary"]) == 6  # The minute's budget, not one more.


class FirstReservationHeld:
    """A RedisStore whose answer to the first reservation arrives only once ``deliver`` is set."""

    def __init__(self, inner: RedisStore) -> None:
        self.inner = inner
        self.sent = asyncio.Event()
        self.deliver = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def change_budget(self, key: str, change: BudgetChange) -> BudgetReading | None:
        first = not self.sent.is_set()
        self.sent.set()
        answer = await self.inner.change_budget(key, change)
        if first:
            await self.deliver.wait()
        return answer


async def test_a_reservation_answered_after_the_minute_ended_leaves_the_new_minutes_count_alone(
    clients, namespace
):
    clock = Clock(60.0 * 30_000_000 - 0.5)  # Half a second before a minute ends.
    held = FirstReservationHeld(store(clients, namespace))
    limits = RateLimits({"primary": Limit(rpm=1)}, store=held, clock=clock)  # type: ignore[arg-type]
    llm = RoutedLlm(
        models={"primary": answering("primary"), "backup": answering("backup")},
        router=FallbackStrategy(["primary", "backup"]),
        limits=limits,
    )
    late = asyncio.create_task(ask(llm))  # The last minute's reservation, its answer on the way...
    await held.sent.wait()
    clock.now += 1.0
    answer = await ask(llm)  # ...while the new minute's one request is spent.
    held.deliver.set()
    await late

    assert answer == ["primary"]
    assert limits.is_available("primary") is False

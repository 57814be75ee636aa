"""Shared health and rate budgets across replicas, on a real redis-server.

Each "replica" is a RoutedLlm with its own redis client, tracker and limits,
as separate processes have; one test runs four real processes. Clocks are
fake and moved by hand.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import pickle
from collections.abc import AsyncGenerator

import pytest
import redis
import redis.asyncio
from google.adk.agents import LlmAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import types
from pydantic import ConfigDict

from routed_llm import (
    BudgetExhausted,
    HealthTracker,
    Limit,
    RateLimits,
    RoutedLlm,
    TransientModelError,
    classify_error,
    is_transient,
)
from routed_llm.redis import RedisStore
from routed_llm.strategies import FallbackStrategy
from routed_llm.testing import ScriptedLlm
from tests import replica_worker
from tests.conftest import ClientFactory, collect, in_order, make_request, run_agent, texts
from tests.fake_servers import ClosedPort
from tests.redis_server import RedisServer, SilentServer, end_cooldown


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Held(BaseLlm):
    """Says it started, then answers ``text`` once ``release`` is set."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    started: asyncio.Event
    release: asyncio.Event
    text: str

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        self.started.set()
        await self.release.wait()
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=self.text)]))


def dead() -> ScriptedLlm:
    return ScriptedLlm(model="p", script=lambda request: ConnectionError("primary is down"))


def answering(text: str) -> ScriptedLlm:
    return ScriptedLlm(model=text, script=lambda request: text)


def replica(
    store: RedisStore | None,
    clock: Clock,
    primary: BaseLlm,
    *,
    limits: dict[str, Limit] | None = None,
    router: object = None,
) -> RoutedLlm:
    """One replica: ``primary`` and a healthy backup, its health and budgets in ``store``."""
    return RoutedLlm(
        models={"primary": primary, "backup": answering("backup")},
        router=router or FallbackStrategy(["primary", "backup"]),  # type: ignore[arg-type]
        health=HealthTracker(failure_threshold=2, cooldown=30.0, clock=clock, wall_clock=clock, store=store),
        limits=RateLimits(limits, store=store, clock=clock) if limits else None,
    )


async def ask(llm: RoutedLlm, text: str = "hello") -> list[str]:
    return texts(await collect(llm.generate_content_async(make_request(text))))


def store(clients: ClientFactory, namespace: str, **options) -> RedisStore:
    # A generous timeout, so a busy test machine never sends these tests to local tracking;
    # the tests of a slow or absent Redis set their own.
    options.setdefault("timeout", 5.0)
    return RedisStore(clients(), namespace=namespace, **options)


# Shared health.


async def test_failures_on_two_replicas_add_up_and_open_the_circuit_for_both(clients, namespace):
    clock = Clock()
    first_primary, second_primary = dead(), dead()
    first = replica(store(clients, namespace), clock, first_primary)
    second = replica(store(clients, namespace), clock, second_primary)

    await ask(first)  # One failure each: two in total, the threshold.
    await ask(second)
    answers = [await ask(first), await ask(second)]

    assert answers == [["backup"], ["backup"]]
    assert (len(first_primary.calls), len(second_primary.calls)) == (1, 1)


async def test_the_half_open_trial_goes_to_one_replica_at_a_time(clients, namespace):
    clock = Clock()
    opener = replica(store(clients, namespace), clock, dead())
    await ask(opener)
    await ask(opener)  # Open for 30 s.
    await end_cooldown(clients(), namespace, "primary")  # Half-open: one trial may go.
    trial_primary = Held(model="p", started=asyncio.Event(), release=asyncio.Event(), text="recovered")
    trial = replica(store(clients, namespace), clock, trial_primary)
    other_primary = answering("recovered")
    other = replica(store(clients, namespace), clock, other_primary)

    in_flight = asyncio.create_task(ask(trial))
    await trial_primary.started.wait()
    during_trial = await ask(other)
    trial_primary.release.set()

    assert during_trial == ["backup"]
    assert other_primary.calls == []
    assert await in_flight == ["recovered"]


async def test_a_success_on_one_replica_closes_the_circuit_for_all(clients, namespace):
    clock = Clock()
    opener = replica(store(clients, namespace), clock, dead())
    await ask(opener)
    await ask(opener)
    await end_cooldown(clients(), namespace, "primary")
    healer_store = store(clients, namespace)
    healer = replica(healer_store, clock, answering("recovered"))

    assert await ask(healer) == ["recovered"]  # The half-open trial succeeds.
    await healer_store.drain()  # The success is written in the background.
    later_primary = answering("recovered")

    assert await ask(replica(store(clients, namespace), clock, later_primary)) == ["recovered"]
    assert len(later_primary.calls) == 1


async def test_a_replica_with_another_namespace_shares_nothing(clients, namespace):
    clock = Clock()
    opener = replica(store(clients, namespace), clock, dead())
    await ask(opener)
    await ask(opener)
    elsewhere_primary = answering("primary")

    answer = await ask(replica(store(clients, namespace + "-other"), clock, elsewhere_primary))

    assert answer == ["primary"]


def test_four_processes_against_a_dead_primary_spend_the_threshold_not_four_times_it(redis_server, namespace):
    workers, calls, threshold = 4, 5, 3
    context = multiprocessing.get_context("spawn")

    with context.Pool(workers) as pool:
        results = pool.starmap(replica_worker.run, [(redis_server.url, namespace, calls)] * workers)

    attempts = sum(count for count, _ in results)
    assert all(answers == [["backup"]] * calls for _, answers in results)
    # Failures recorded across processes open the circuit at the threshold; an attempt each
    # of the other processes already had in flight then may still fail. Per-process health
    # would spend threshold * workers = 12.
    assert threshold <= attempts <= threshold + workers - 1


# Rate budgets.


async def test_a_budget_spent_on_one_replica_makes_the_key_unavailable_on_another(clients, namespace):
    clock = Clock()
    limits = {"primary": Limit(rpm=2)}
    first = replica(store(clients, namespace), clock, answering("primary"), limits=limits)
    second_primary = answering("primary")
    second = replica(store(clients, namespace), clock, second_primary, limits=limits)

    spent = [await ask(first), await ask(first)]
    [answer] = await collect(second.generate_content_async(make_request()))

    assert spent == [["primary"], ["primary"]]
    route = answer.custom_metadata["routed_llm"]
    assert (route["key"], route["failed_keys"]) == ("backup", [])  # Skipped, not tried and refused.
    assert second_primary.calls == []


async def test_concurrent_calls_on_two_replicas_never_overrun_a_budget(clients, namespace):
    clock = Clock()
    limits = {"primary": Limit(rpm=5)}
    primaries = [answering("primary"), answering("primary")]
    replicas = [replica(store(clients, namespace), clock, primary, limits=limits) for primary in primaries]

    answers = await asyncio.gather(*(ask(llm) for llm in replicas for _ in range(10)))

    assert sum(len(primary.calls) for primary in primaries) == 5
    assert sorted(answer for [answer] in answers) == ["backup"] * 15 + ["primary"] * 5


async def test_a_lost_reservation_race_fails_over_with_budget_exhausted(clients, namespace):
    clock = Clock()
    limits = {"primary": Limit(rpm=1)}
    await ask(replica(store(clients, namespace), clock, answering("primary"), limits=limits))
    router = in_order(["primary", "backup"])  # Ignores availability, as a replica that read before the race.
    late_primary = answering("primary")
    late = replica(store(clients, namespace), clock, late_primary, limits=limits, router=router)

    answer = await ask(late)

    assert answer == ["backup"]
    assert late_primary.calls == []
    assert isinstance(router.seen[1].last_error, BudgetExhausted)


async def test_a_spent_budget_is_no_health_failure(clients, namespace):
    clock = Clock()
    limits = {"primary": Limit(rpm=1)}
    await ask(replica(store(clients, namespace), clock, answering("primary"), limits=limits))
    health = HealthTracker(
        failure_threshold=1, clock=clock, wall_clock=clock, store=store(clients, namespace)
    )
    llm = RoutedLlm(
        models={"primary": answering("primary"), "backup": answering("backup")},
        router=in_order(["primary", "backup"]),
        health=health,
        limits=RateLimits(limits, store=store(clients, namespace), clock=clock),
    )

    await ask(llm)

    assert health.state("primary") == "closed"


async def test_a_budget_rolls_over_when_the_minute_ends(clients, namespace):
    clock = Clock(now=1_800_000_000.0)  # A whole minute: the window starts here.
    limits = {"primary": Limit(rpm=1)}
    llm = replica(store(clients, namespace), clock, answering("primary"), limits=limits)
    await ask(llm)

    within = await ask(llm)
    clock.now += 60.0
    after = await ask(llm)

    assert (within, after) == (["backup"], ["primary"])


async def test_tokens_from_usage_metadata_count_against_the_minutes_tokens(clients, namespace):
    clock = Clock()
    limits = {"primary": Limit(tpm=100)}
    usage = types.GenerateContentResponseUsageMetadata(
        prompt_token_count=60, candidates_token_count=40, total_token_count=100
    )
    spender_store = store(clients, namespace)
    spender = replica(
        spender_store,
        clock,
        ScriptedLlm(
            model="p",
            script=[
                LlmResponse(
                    content=types.Content(role="model", parts=[types.Part(text="primary")]),
                    usage_metadata=usage,
                )
            ],
        ),
        limits=limits,
    )
    await ask(spender)
    await spender_store.drain()  # Tokens are written after the response, in the background.
    other_primary = answering("primary")

    answer = await ask(replica(store(clients, namespace), clock, other_primary, limits=limits))

    assert answer == ["backup"]
    assert other_primary.calls == []


async def test_without_a_store_a_budget_is_counted_in_the_process():
    clock = Clock()
    llm = replica(None, clock, answering("primary"), limits={"primary": Limit(rpm=1)})

    answers = [await ask(llm), await ask(llm)]

    assert answers == [["primary"], ["backup"]]


async def test_an_agent_run_shares_health_and_budgets_through_redis(clients, namespace):
    clock = Clock()
    shared = store(clients, namespace)
    limits = RateLimits({"primary": Limit(rpm=1)}, store=shared, clock=clock)
    agent = LlmAgent(
        name="assistant",
        model=RoutedLlm(
            models={"primary": answering("primary"), "backup": answering("backup")},
            router=FallbackStrategy(["primary", "backup"]),
            health=HealthTracker(clock=clock, wall_clock=clock, store=shared),
            limits=limits,
        ),
    )

    first, _ = await run_agent(agent, "hi")
    second, _ = await run_agent(agent, "hi again")

    replies = [
        [event.custom_metadata["routed_llm"]["key"] for event in events if event.custom_metadata]
        for events in (first, second)
    ]
    assert replies == [["primary"], ["backup"]]
    assert await clients().get(f"routed_llm:{{{namespace}}}:requests:primary:{int(clock.now // 60)}") == b"1"


# Redis down, slow, or back.


async def test_calls_succeed_on_local_tracking_when_redis_is_unreachable(clients, namespace, caplog):
    clock = Clock()
    unreachable = RedisStore(clients(f"redis://127.0.0.1:{ClosedPort().port}/0"), namespace=namespace)
    primary = dead()
    llm = replica(unreachable, clock, primary)

    with caplog.at_level(logging.WARNING, logger="routed_llm.redis"):
        answers = [await ask(llm) for _ in range(4)]

    assert answers == [["backup"]] * 4
    assert len(primary.calls) == 2  # The local tracker opened the circuit at the threshold.
    assert [record.levelname for record in caplog.records if record.name == "routed_llm.redis"] == ["WARNING"]


async def test_a_stalling_redis_does_not_hold_calls_beyond_the_store_timeout(clients, namespace):
    silent = SilentServer()
    try:
        stalled = RedisStore(clients(f"redis://127.0.0.1:{silent.port}/0"), namespace=namespace, timeout=0.01)
        llm = replica(stalled, Clock(), answering("primary"))

        # Without the store's timeout, this call would wait for Redis forever.
        answer = await ask(llm)
    finally:
        silent.stop()

    assert answer == ["primary"]
    assert not stalled.available


async def test_tracking_is_shared_again_once_redis_restarts(tmp_path, namespace, caplog):
    server = RedisServer(tmp_path).start()
    clock = Clock()
    clients = [redis.asyncio.Redis.from_url(server.url) for _ in range(2)]
    try:
        stores = [
            RedisStore(client, namespace=namespace, timeout=5.0, retry_interval=0) for client in clients
        ]
        first = replica(stores[0], clock, dead())
        second_primary = dead()
        second = replica(stores[1], clock, second_primary)
        assert await ask(first) == ["backup"]

        server.stop()
        with caplog.at_level(logging.WARNING, logger="routed_llm.redis"):
            during = [await ask(first), await ask(second)]
        server.start()  # Empty: its state went with it.
        await ask(first)
        await ask(first)  # Two failures recorded in the new server: open for all.
        after = await ask(second)
    finally:
        server.stop()
        for client in clients:
            await client.aclose()

    assert during == [["backup"], ["backup"]]
    assert after == ["backup"]
    assert len(second_primary.calls) == 1  # Only during the outage, on its own tracking.
    warnings = [record for record in caplog.records if record.name == "routed_llm.redis"]
    assert [record.levelname for record in warnings] == ["WARNING", "WARNING"]  # One per store.


# Safe names, and what is stored.


async def test_nothing_from_a_request_is_written_and_every_record_expires(clients, namespace):
    clock = Clock()
    llm = replica(store(clients, namespace), clock, dead(), limits={"backup": Limit(rpm=10, tpm=1000)})

    await ask(llm, "my card is 4111 1111 1111 1111")
    reader = clients()
    keys = sorted([key.decode() async for key in reader.scan_iter(f"routed_llm:{{{namespace}}}:*")])
    read = {"hash": reader.hgetall, "set": reader.smembers, "string": reader.get}
    values = [str(await read[(await reader.type(key)).decode()](key)) for key in keys]
    ttls = [await reader.pttl(key) for key in keys]

    assert keys == [
        f"routed_llm:{{{namespace}}}:circuit:primary",
        f"routed_llm:{{{namespace}}}:replicas:{int(clock.now // 60)}",  # Random process ids.
        f"routed_llm:{{{namespace}}}:requests:backup:{int(clock.now // 60)}",
    ]
    assert not any("4111" in value or "card" in value for value in values)
    assert all(ttl > 0 for ttl in ttls)


@pytest.mark.parametrize("namespace", ["", "support bot", "a{b}", "x" * 65, "-leading"])
async def test_an_invalid_namespace_is_refused(clients, namespace):
    with pytest.raises(ValueError, match="namespace"):
        RedisStore(clients(), namespace=namespace)


def test_a_sync_redis_client_is_refused():
    with pytest.raises(TypeError, match=r"redis\.asyncio\.Redis"):
        RedisStore(redis.Redis(), namespace="bot")


async def test_a_model_key_a_store_cannot_record_is_refused_at_construction(clients):
    with pytest.raises(ValueError, match="cannot be recorded"):
        RoutedLlm(
            models={"my model": answering("a"), "b": answering("b")},
            router=FallbackStrategy(["my model", "b"]),
            health=HealthTracker(store=RedisStore(clients(), namespace="bot")),
        )


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: Limit(), ValueError),
        (lambda: Limit(rpm=0), ValueError),
        (lambda: Limit(rpm=1.5), TypeError),
        (lambda: RateLimits({}), ValueError),
        (lambda: RateLimits({"a": 60}), TypeError),
    ],
)
def test_an_invalid_limit_is_refused(build, error):
    with pytest.raises(error):
        build()


def test_limits_on_a_key_that_is_not_routed_are_refused():
    with pytest.raises(ValueError, match="not in models"):
        RoutedLlm(
            models={"a": answering("a")},
            router=FallbackStrategy(["a"]),
            limits=RateLimits({"b": Limit(rpm=1)}),
        )


def test_budget_exhausted_is_transient_and_survives_pickling():
    error = BudgetExhausted("pro", 12.5)

    copy = pickle.loads(pickle.dumps(error))

    assert isinstance(error, TransientModelError)
    assert (classify_error(error), is_transient(error)) == ("transient", True)
    assert (copy.key, copy.resets_in, str(copy)) == ("pro", 12.5, str(error))

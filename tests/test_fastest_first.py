"""FastestFirst: the available key with the lowest recent time to first response."""

from __future__ import annotations

from collections import Counter
from types import MappingProxyType

import pytest
from google.genai import errors

from routed_llm import ErrorContext, HealthTracker, LatencyTracker, PermanentModelError, RoutedLlm
from routed_llm.strategies import FastestFirst
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, make_request, texts

MODELS = MappingProxyType({key: ScriptedLlm(model=key) for key in ("a", "b", "c")})


def timed(**samples: tuple[float, ...]) -> LatencyTracker:
    """A tracker needing two samples per key, holding ``samples`` by key."""
    latency = LatencyTracker(min_samples=2)
    for key, seconds in samples.items():
        for value in seconds:
            latency.record(key, value)
    return latency


def failed(*keys: str, error: BaseException | None = None) -> ErrorContext:
    error = error or ConnectionError("down")
    return ErrorContext(
        failed_keys=frozenset(keys), last_error=error, errors=MappingProxyType(dict.fromkeys(keys, error))
    )


async def route(strategy: FastestFirst, context: ErrorContext | None = None) -> str | None:
    return await strategy(MODELS, make_request(), context)


async def test_the_first_pick_is_the_key_with_the_lowest_median():
    latency = timed(a=(0.9, 1.1), b=(0.2, 0.4), c=(0.5, 0.7))

    assert await route(FastestFirst(["a", "b", "c"], latency=latency, explore=0.0)) == "b"


async def test_keys_are_ranked_by_the_quantile_asked_for():
    latency = timed(a=(0.1, 0.1, 0.1, 5.0), b=(0.3, 0.3, 0.3, 0.3))

    by_median = await route(FastestFirst(["a", "b"], latency=latency, explore=0.0))
    by_p99 = await route(FastestFirst(["a", "b"], latency=latency, quantile=0.99, explore=0.0))

    assert (by_median, by_p99) == ("a", "b")


async def test_keys_with_too_few_samples_rank_after_the_timed_ones_in_the_given_order():
    latency = timed(c=(3.0, 3.0))
    strategy = FastestFirst(["a", "b", "c"], latency=latency, explore=0.0)

    assert await route(strategy) == "c"
    assert await route(strategy, failed("c")) == "a"


async def test_without_any_samples_the_first_key_is_picked():
    assert await route(FastestFirst(["b", "a"], latency=LatencyTracker(), explore=0.0)) == "b"


async def test_a_transient_failure_fails_over_to_the_next_fastest_key():
    latency = timed(a=(0.9, 0.9), b=(0.2, 0.2), c=(0.5, 0.5))
    strategy = FastestFirst(["a", "b", "c"], latency=latency, explore=0.0)

    assert await route(strategy, failed("b")) == "c"
    assert await route(strategy, failed("b", "c")) == "a"
    assert await route(strategy, failed("a", "b", "c")) is None


async def test_a_permanent_failure_stops_the_call():
    strategy = FastestFirst(["a", "b"], latency=timed(a=(0.1, 0.1), b=(0.2, 0.2)), explore=0.0)

    assert await route(strategy, failed("a", error=PermanentModelError("bad request"))) is None


async def test_exploration_tries_a_key_with_too_few_samples_about_explore_of_the_time():
    strategy = FastestFirst(["a", "b"], latency=timed(a=(0.1, 0.1)), explore=0.05, seed=7)

    picks = Counter([await route(strategy) for _ in range(2000)])

    assert 50 <= picks["b"] <= 150
    assert picks["a"] + picks["b"] == 2000


async def test_the_same_seed_explores_the_same_way():
    def strategy() -> FastestFirst:
        return FastestFirst(["a", "b", "c"], latency=timed(a=(0.1, 0.1)), explore=0.3, seed=42)

    first, second = strategy(), strategy()

    picks = [await route(first) for _ in range(200)]

    assert picks == [await route(second) for _ in range(200)]
    assert set(picks) == {"a", "b", "c"}


async def test_a_key_with_enough_samples_is_never_explored():
    strategy = FastestFirst(["a", "b"], latency=timed(a=(0.1, 0.1), b=(0.9, 0.9)), explore=1.0, seed=1)

    assert {await route(strategy) for _ in range(50)} == {"a"}


async def test_a_failover_does_not_explore():
    strategy = FastestFirst(["a", "b", "c"], latency=timed(a=(0.1, 0.1), b=(0.2, 0.2)), explore=1.0, seed=1)

    assert await route(strategy, failed("a")) == "b"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def unavailable() -> errors.ServerError:
    return errors.ServerError(503, {"error": {"code": 503, "message": "down", "status": "UNAVAILABLE"}})


async def test_a_fast_key_whose_circuit_is_open_is_skipped():
    latency = LatencyTracker(min_samples=1)
    latency.record("fast", 0.1)
    latency.record("slow", 0.9)
    fast = ScriptedLlm(model="fast", script=lambda request: unavailable())
    llm = RoutedLlm(
        models={"fast": fast, "slow": ScriptedLlm(model="slow", script=lambda request: "from slow")},
        router=FastestFirst(["fast", "slow"], latency=latency, explore=0.0),
        health=HealthTracker(failure_threshold=2, cooldown=30.0),
        latency=latency,
    )

    answers = [texts(await collect(llm.generate_content_async(make_request()))) for _ in range(4)]

    assert answers == [["from slow"]] * 4
    assert len(fast.calls) == 2  # Then its circuit opened and the strategy skipped it.


async def test_with_every_circuit_open_the_key_whose_cooldown_ends_soonest_is_tried():
    clock = Clock()
    health = HealthTracker(failure_threshold=1, cooldown=30.0, clock=clock)
    health.record_failure("slow", unavailable(), "transient")
    clock.now += 10.0
    health.record_failure("fast", unavailable(), "transient")
    latency = LatencyTracker(min_samples=1)
    latency.record("fast", 0.1)
    latency.record("slow", 0.9)
    slow = ScriptedLlm(model="slow", script=lambda request: "from slow")
    llm = RoutedLlm(
        models={"fast": ScriptedLlm(model="fast", script=lambda request: "from fast"), "slow": slow},
        router=FastestFirst(["fast", "slow"], latency=latency, explore=0.0),
        health=health,
    )

    assert texts(await collect(llm.generate_content_async(make_request()))) == ["from slow"]


async def test_exploration_skips_a_key_whose_circuit_is_open():
    health = HealthTracker(failure_threshold=1, cooldown=30.0)
    health.record_failure("cold", unavailable(), "transient")
    latency = LatencyTracker(min_samples=1)
    latency.record("warm", 0.1)
    warm = ScriptedLlm(model="warm", script=lambda request: "from warm")
    llm = RoutedLlm(
        models={"warm": warm, "cold": ScriptedLlm(model="cold", script=lambda request: "from cold")},
        router=FastestFirst(["warm", "cold"], latency=latency, explore=1.0),
        health=health,
    )

    assert texts(await collect(llm.generate_content_async(make_request()))) == ["from warm"]


def test_routed_llm_refuses_a_strategy_naming_keys_it_does_not_route():
    with pytest.raises(ValueError, match=r"\['c'\]"):
        RoutedLlm(
            models={"a": ScriptedLlm(model="a"), "b": ScriptedLlm(model="b")},
            router=FastestFirst(["a", "c"], latency=LatencyTracker()),
        )


@pytest.mark.parametrize(
    ("arguments", "options", "error"),
    [
        ((["a"], LatencyTracker()), {"quantile": 1.5}, ValueError),
        ((["a"], LatencyTracker()), {"explore": -0.1}, ValueError),
        ((["a"], LatencyTracker()), {"explore": "often"}, TypeError),
        ((["a"], LatencyTracker()), {"seed": "lucky"}, TypeError),
        ((["a"], LatencyTracker()), {"is_transient": 3}, TypeError),
        ((["a"], {}), {}, TypeError),
        (([], LatencyTracker()), {}, ValueError),
        (("ab", LatencyTracker()), {}, TypeError),
        ((["a", "a"], LatencyTracker()), {}, ValueError),
    ],
)
def test_invalid_arguments_are_refused_at_construction(arguments, options, error):
    with pytest.raises(error):
        FastestFirst(*arguments, **options)

"""LatencyTracker: recent times to first response per key, recorded by RoutedLlm.

Every tracker runs on a fake clock that the models move by hand, so the
tests assert what was recorded, never how long anything took.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import AsyncGenerator, Callable
from types import MappingProxyType

import pytest
from google.adk.agents import LlmAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import types
from pydantic import ConfigDict

from routed_llm import (
    METADATA_KEY,
    ErrorContext,
    FastestFirst,
    HedgeDelay,
    LatencyTracker,
    RoutedLlm,
    TransientModelError,
    classify_error,
    is_transient,
)
from routed_llm.strategies import FallbackStrategy
from routed_llm.testing import ScriptedLlm, Step
from tests.conftest import collect, get_weather, make_request, run_agent, texts


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def taking(clock: Clock, seconds: float, *steps: Step) -> Callable[[LlmRequest], Step]:
    """A script whose every call takes ``seconds`` on ``clock`` to its first response."""
    remaining = list(steps)

    def step(request: LlmRequest) -> Step:
        clock.now += seconds
        return remaining.pop(0) if len(remaining) > 1 else remaining[0]

    return step


def tracker(*seconds: float, key: str = "a", **options) -> LatencyTracker:
    latency = LatencyTracker(**{"min_samples": 1, **options})
    for value in seconds:
        latency.record(key, value)
    return latency


async def ask(llm: RoutedLlm, *, stream: bool = False) -> list[str]:
    return texts(await collect(llm.generate_content_async(make_request(), stream)))


# Quantiles.


def test_quantile_is_none_until_the_key_has_min_samples():
    latency = LatencyTracker(min_samples=3)
    latency.record("a", 0.1)
    latency.record("a", 0.2)
    before = latency.quantile("a", 0.5)

    latency.record("a", 0.3)

    assert before is None
    assert latency.quantile("a", 0.5) == pytest.approx(0.2)


def test_quantile_interpolates_linearly_between_the_nearest_samples():
    latency = tracker(0.5, 0.1, 0.4, 0.2, 0.3)

    assert [latency.quantile("a", q) for q in (0.0, 0.25, 0.5, 0.9, 1.0)] == pytest.approx(
        [0.1, 0.2, 0.3, 0.46, 0.5]
    )


def test_a_key_never_recorded_has_no_quantile():
    assert tracker(0.1).quantile("b", 0.5) is None


def test_each_key_has_its_own_samples():
    latency = tracker(0.1, 0.1)
    latency.record("b", 2.0)

    assert (latency.quantile("a", 1.0), latency.quantile("b", 0.0)) == (0.1, 2.0)


def test_only_the_newest_window_samples_are_kept():
    latency = tracker(9.0, 9.0, 9.0, 0.1, 0.2, 0.3, window=3)

    assert (latency.quantile("a", 0.0), latency.quantile("a", 1.0)) == (0.1, 0.3)


# Bad input.


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"window": 0}, ValueError, "window=0"),
        ({"window": 2.5}, TypeError, "window"),
        ({"window": True}, TypeError, "window"),
        ({"min_samples": 0}, ValueError, "min_samples=0"),
        ({"window": 10, "min_samples": 11}, ValueError, "above window"),
        ({"store": object()}, TypeError, "share_samples"),
        ({"clock": 5}, TypeError, "clock"),
    ],
)
def test_invalid_settings_are_refused_at_construction(options, error, message):
    with pytest.raises(error, match=message):
        LatencyTracker(**options)


@pytest.mark.parametrize(
    ("key", "seconds", "error"),
    [("a", -0.1, ValueError), ("a", math.nan, ValueError), ("a", "0.1", TypeError), ("", 0.1, TypeError)],
)
def test_an_invalid_sample_is_refused(key, seconds, error):
    with pytest.raises(error):
        LatencyTracker().record(key, seconds)


@pytest.mark.parametrize(("q", "error"), [(1.5, ValueError), (-0.1, ValueError), ("p95", TypeError)])
def test_an_invalid_quantile_is_refused(q, error):
    with pytest.raises(error):
        tracker(0.1).quantile("a", q)


def test_routed_llm_refuses_a_latency_that_is_not_a_tracker():
    with pytest.raises(TypeError, match="LatencyTracker"):
        RoutedLlm(models={"a": ScriptedLlm(model="a")}, router=FallbackStrategy(["a"]), latency={})  # type: ignore[arg-type]


# What RoutedLlm records.


async def test_routed_llm_records_each_answer_time_to_first_response_on_the_trackers_clock():
    clock = Clock()
    latency = LatencyTracker(min_samples=2, clock=clock)
    model = ScriptedLlm(model="a", script=taking(clock, 0.25, "hello"))
    llm = RoutedLlm(models={"a": model}, router=FallbackStrategy(["a"]), latency=latency)

    await ask(llm)
    await ask(llm)

    assert latency.quantile("a", 1.0) == pytest.approx(0.25)


class FirstChunkThenSlow(BaseLlm):
    """Streams a first chunk, then takes ``rest`` seconds on ``clock`` before the next."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    clock: Clock
    rest: float

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        self.clock.now += 0.1
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text="one")]), partial=True)
        self.clock.now += self.rest
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text="one two")]))


async def test_only_the_time_to_the_first_chunk_of_a_stream_is_recorded():
    clock = Clock()
    latency = LatencyTracker(min_samples=1, clock=clock)
    llm = RoutedLlm(
        models={"a": FirstChunkThenSlow(model="a", clock=clock, rest=5.0)},
        router=FallbackStrategy(["a"]),
        latency=latency,
    )

    answer = await ask(llm, stream=True)

    assert answer == ["one", "one two"]
    assert latency.quantile("a", 1.0) == pytest.approx(0.1)


async def test_an_attempt_that_fails_before_its_first_response_is_not_recorded():
    clock = Clock()
    latency = LatencyTracker(min_samples=1, clock=clock)
    llm = RoutedLlm(
        models={
            "a": ScriptedLlm(model="a", script=taking(clock, 0.3, ConnectionError("down"))),
            "b": ScriptedLlm(model="b", script=taking(clock, 0.5, "from b")),
        },
        router=FallbackStrategy(["a", "b"]),
        latency=latency,
    )

    assert await ask(llm) == ["from b"]
    assert (latency.quantile("a", 0.5), latency.quantile("b", 0.5)) == (None, pytest.approx(0.5))


async def test_an_error_response_is_not_recorded():
    clock = Clock()
    latency = LatencyTracker(min_samples=1, clock=clock)
    malformed = LlmResponse(
        error_code="MALFORMED_FUNCTION_CALL", finish_reason=types.FinishReason.MALFORMED_FUNCTION_CALL
    )
    llm = RoutedLlm(
        models={
            "a": ScriptedLlm(model="a", script=taking(clock, 0.3, malformed)),
            "b": ScriptedLlm(model="b", script=taking(clock, 0.5, "from b")),
        },
        router=FallbackStrategy(["a", "b"]),
        latency=latency,
    )

    assert await ask(llm) == ["from b"]
    assert latency.quantile("a", 0.5) is None


async def test_an_answer_with_nothing_in_it_is_not_recorded():
    clock = Clock()
    latency = LatencyTracker(min_samples=1, clock=clock)
    llm = RoutedLlm(
        models={
            "a": ScriptedLlm(model="a", script=taking(clock, 0.1, LlmResponse())),
            "b": ScriptedLlm(model="b", script=taking(clock, 0.5, "from b")),
        },
        router=FallbackStrategy(["a", "b"]),
        latency=latency,
    )

    assert await ask(llm) == ["from b"]
    assert latency.quantile("a", 0.5) is None


async def test_a_judged_answer_is_recorded_whatever_its_verdict():
    clock = Clock()
    latency = LatencyTracker(min_samples=1, clock=clock)
    llm = RoutedLlm(
        models={
            "a": ScriptedLlm(model="a", script=taking(clock, 0.3, "unsure")),
            "b": ScriptedLlm(model="b", script=taking(clock, 0.5, "sure")),
        },
        router=FallbackStrategy(["a", "b"]),
        accept={"a": lambda key, response: "not sure enough"},
        latency=latency,
    )

    assert await ask(llm) == ["sure"]
    assert latency.quantile("a", 0.5) == pytest.approx(0.3)


async def test_a_live_connection_is_not_recorded():
    clock = Clock()
    latency = LatencyTracker(min_samples=1, clock=clock)
    llm = RoutedLlm(
        models={"a": ScriptedLlm(model="a", script=taking(clock, 0.3, "live hello"))},
        router=FallbackStrategy(["a"]),
        latency=latency,
    )

    async with llm.connect(make_request()) as connection:
        received = texts(await collect(connection.receive()))

    assert received == ["live hello"]
    assert latency.quantile("a", 0.5) is None


# HedgeDelay.


def test_hedge_delay_is_transient_and_survives_pickling():
    error = HedgeDelay("primary", 0.8)

    copy = pickle.loads(pickle.dumps(error))

    assert isinstance(error, TransientModelError)
    assert (classify_error(error), is_transient(error)) == ("transient", True)
    assert (copy.key, copy.waited, str(copy)) == ("primary", 0.8, str(error))


@pytest.mark.parametrize(
    "strategy",
    [FallbackStrategy(["a", "b"]), FastestFirst(["a", "b"], latency=LatencyTracker(), explore=0.0)],
    ids=["FallbackStrategy", "FastestFirst"],
)
async def test_strategies_pick_their_next_key_on_a_hedge_delay(strategy):
    delay = HedgeDelay("a", 0.8)
    context = ErrorContext(
        failed_keys=frozenset({"a"}), last_error=delay, errors=MappingProxyType({"a": delay})
    )

    models = {"a": ScriptedLlm(model="a"), "b": ScriptedLlm(model="b")}

    choice = await strategy(models, make_request(), context)

    assert choice == "b"


# End to end.


async def test_an_agent_with_a_tool_is_served_by_the_fastest_key_which_learns_its_new_times():
    clock = Clock()
    latency = LatencyTracker(min_samples=2, clock=clock)
    for seconds in (1.0, 1.2):
        latency.record("slow", seconds)
    for seconds in (0.4, 0.6):
        latency.record("fast", seconds)
    call = types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"}))
    fast = ScriptedLlm(model="fast", script=taking(clock, 0.05, call, "Sunny in Paris."))
    slow = ScriptedLlm(model="slow", script=taking(clock, 0.05, "never asked"))
    agent = LlmAgent(
        name="assistant",
        model=RoutedLlm(
            models={"slow": slow, "fast": fast},
            router=FastestFirst(["slow", "fast"], latency=latency, seed=1),
            latency=latency,
        ),
        tools=[get_weather],
    )

    events, _ = await run_agent(agent, "Weather in Paris?")

    assert texts([event for event in events if event.content and event.content.parts[0].text]) == [
        "Sunny in Paris."
    ]
    assert (len(fast.calls), len(slow.calls)) == (2, 0)
    served = {event.custom_metadata[METADATA_KEY]["key"] for event in events if event.custom_metadata}
    assert served == {"fast"}
    assert latency.quantile("fast", 0.0) == pytest.approx(0.05)

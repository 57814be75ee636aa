"""Hedged requests: a slow attempt gets a second one beside it, and the first answer wins.

Every "slow" model waits on an ``asyncio.Event`` that nobody sets (or that a
test sets at a chosen step), and ``hedge_after`` is tiny, so each test
asserts who answered and what was cancelled, never how long anything took.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field

import pytest
from google.adk.agents import LlmAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import types
from pydantic import ConfigDict, PrivateAttr

from routed_llm import (
    METADATA_KEY,
    AttemptTimeout,
    DeadlineExceeded,
    HealthTracker,
    HedgeDelay,
    HedgeEvent,
    LatencyTracker,
    Limit,
    RateLimits,
    ResponseRejected,
    RoutedLlm,
)
from routed_llm.strategies import FallbackStrategy
from routed_llm.testing import ScriptedLlm, Stream
from tests.conftest import collect, get_weather, make_request, run_agent, texts, weather_round_trip

TINY = 1e-4  # Seconds: every slow attempt is hedged almost at once.


@dataclass
class Log:
    """What happened to one fake model's calls."""

    requests: list[LlmRequest] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: int = 0
    closed: int = 0


class Gated(BaseLlm):
    """Answers ``answer`` (or raises it) once ``gate`` is set; ``gate=None`` answers at once.

    ``on_call`` runs when the model is called, before it waits: a test's way
    to set another model's gate at a chosen step.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    _gate: asyncio.Event | None = PrivateAttr()
    _answer: str | BaseException = PrivateAttr()
    _on_call: Callable[[LlmRequest], None] | None = PrivateAttr()
    _log: Log = PrivateAttr()

    def __init__(
        self,
        *,
        model: str,
        answer: str | BaseException = "ok",
        gate: asyncio.Event | None = None,
        on_call: Callable[[LlmRequest], None] | None = None,
    ) -> None:
        super().__init__(model=model)
        self._gate = gate
        self._answer = answer
        self._on_call = on_call
        self._log = Log()

    @property
    def log(self) -> Log:
        return self._log

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        self._log.requests.append(llm_request)
        self._log.started.set()
        if self._on_call is not None:
            self._on_call(llm_request)
        try:
            if self._gate is not None:
                await self._gate.wait()
            if isinstance(self._answer, BaseException):
                raise self._answer
            yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=self._answer)]))
        except asyncio.CancelledError:
            self._log.cancelled += 1
            raise
        finally:
            self._log.closed += 1


def slow(model: str, **options) -> Gated:
    """A model that never answers: it waits on an event nobody sets."""
    return Gated(model=model, gate=asyncio.Event(), **options)


def recording(order: list[str]):
    """``in_order`` that also records each error context it was asked with."""
    seen: list[object] = []

    def router(models, llm_request, error_context):
        seen.append(error_context)
        failed = error_context.failed_keys if error_context else frozenset()
        return next((key for key in order if key not in failed), None)

    router.seen = seen  # type: ignore[attr-defined]
    return router


def route(responses: list[LlmResponse]) -> dict:
    return responses[-1].custom_metadata[METADATA_KEY]


# Construction.


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"hedge_after": 0}, ValueError, "positive, finite"),
        ({"hedge_after": -1.0}, ValueError, "positive, finite"),
        ({"hedge_after": math.inf}, ValueError, "positive, finite"),
        ({"hedge_after": True}, TypeError, "seconds"),
        ({"hedge_after": [0.1]}, TypeError, "seconds"),
        ({"hedge_after": "p50"}, ValueError, "'p90', 'p95', 'p99'"),
        ({"hedge_after": "p95"}, ValueError, "latency=LatencyTracker"),
        ({"hedge_after": {"c": 0.1}}, ValueError, "['c']"),
        ({"hedge_after": {"a": 0.0}}, ValueError, "hedge_after['a']"),
        ({"hedge_after": 0.1, "max_hedges": 0}, ValueError, "at least 1"),
        ({"hedge_after": 0.1, "max_hedges": 1.5}, TypeError, "whole number"),
        ({"hedge_after": 0.1, "on_hedge": "log"}, TypeError, "on_hedge"),
    ],
)
def test_bad_hedging_options_are_refused_at_construction(options, error, message):
    models = {"a": ScriptedLlm(model="a"), "b": ScriptedLlm(model="b")}

    with pytest.raises(error) as raised:
        RoutedLlm(models=models, router=FallbackStrategy(["a", "b"]), **options)

    assert message in str(raised.value)


async def test_without_hedge_after_the_route_record_has_no_hedges():
    llm = RoutedLlm(
        models={"a": Gated(model="a"), "b": Gated(model="b")}, router=FallbackStrategy(["a", "b"])
    )

    responses = await collect(llm.generate_content_async(make_request()))

    assert "hedged" not in route(responses)
    assert llm.models["b"].log.requests == []


# 1. Starting a hedge.


async def test_a_slow_attempt_is_hedged_with_a_hedge_delay_naming_its_key():
    router = recording(["a", "b"])
    llm = RoutedLlm(models={"a": slow("a"), "b": Gated(model="b")}, router=router, hedge_after=TINY)

    await collect(llm.generate_content_async(make_request()))

    context = router.seen[1]
    assert isinstance(context.last_error, HedgeDelay)
    assert (context.last_error.key, context.failed_keys, list(context.errors)) == ("a", {"a"}, ["a"])
    assert context.errors["a"] is context.last_error
    assert context.last_error.waited >= TINY


async def test_the_hedged_attempt_goes_on_and_may_win():
    gate = asyncio.Event()
    models = {
        "a": Gated(model="a", answer="from a", gate=gate),
        "b": slow("b", on_call=lambda request: gate.set()),  # a answers once b has started.
    }
    llm = RoutedLlm(models=models, router=FallbackStrategy(["a", "b"]), hedge_after=TINY)

    responses = await collect(llm.generate_content_async(make_request()))

    assert texts(responses) == ["from a"]
    assert (route(responses)["key"], route(responses)["hedged"]) == ("a", ["b"])
    assert models["b"].log.cancelled == 1


async def test_each_attempt_is_hedged_once():
    router = recording(["a", "b", "c"])
    models = {"a": slow("a"), "b": slow("b"), "c": Gated(model="c")}
    llm = RoutedLlm(models=models, router=router, hedge_after=TINY, max_hedges=2)

    responses = await collect(llm.generate_content_async(make_request()))

    hedged = [context.last_error.key for context in router.seen[1:]]
    assert hedged == ["a", "b"]
    assert route(responses)["hedged"] == ["b", "c"]


# 2. Declining.


async def test_a_router_that_declines_starts_no_hedge_and_the_first_attempt_goes_on():
    gate = asyncio.Event()

    def router(models, llm_request, error_context):
        if error_context is None:
            return "a"
        gate.set()  # a answers after the router declined.
        return None

    models = {"a": Gated(model="a", answer="from a", gate=gate), "b": Gated(model="b")}
    llm = RoutedLlm(models=models, router=router, hedge_after=TINY)

    responses = await collect(llm.generate_content_async(make_request()))

    assert texts(responses) == ["from a"]
    assert (route(responses)["key"], route(responses)["failed_keys"], route(responses)["hedged"]) == (
        "a",
        [],
        [],
    )
    assert models["b"].log.requests == []


# 3. The race.


async def test_the_first_answer_wins_and_the_loser_is_cancelled_and_closed_at_once():
    models = {"a": slow("a"), "b": Gated(model="b", answer="from b")}
    llm = RoutedLlm(models=models, router=FallbackStrategy(["a", "b"]), hedge_after=TINY)
    responses = llm.generate_content_async(make_request())

    first = await anext(responses)

    assert texts([first]) == ["from b"]
    assert (models["a"].log.cancelled, models["a"].log.closed) == (1, 1)
    await responses.aclose()


async def test_the_route_record_names_the_winner_and_the_keys_started_by_hedging():
    llm = RoutedLlm(
        models={"a": slow("a"), "b": Gated(model="b")}, router=FallbackStrategy(["a", "b"]), hedge_after=TINY
    )

    responses = await collect(llm.generate_content_async(make_request()))

    assert route(responses) == {
        "key": "b",
        "model": "b",
        "failed_keys": [],
        "errors": {},
        "attempts": 2,
        "hedged": ["b"],
    }


async def test_a_judged_key_wins_only_with_its_accepted_answer():
    b_gate, never = asyncio.Event(), asyncio.Event()
    a_gate = asyncio.Event()

    async def judge(key, response):
        b_gate.set()  # a answered first; b answers while a's answer is judged.
        await never.wait()
        return True

    models = {
        "a": Gated(model="a", answer="from a", gate=a_gate),
        "b": Gated(model="b", answer="from b", gate=b_gate, on_call=lambda request: a_gate.set()),
    }
    llm = RoutedLlm(
        models=models, router=FallbackStrategy(["a", "b"]), hedge_after={"a": TINY}, accept={"a": judge}
    )

    responses = await collect(llm.generate_content_async(make_request()))

    assert texts(responses) == ["from b"]
    assert route(responses)["key"] == "b"


async def test_a_cancelled_loser_counts_neither_as_a_health_failure_nor_a_success():
    health = HealthTracker(failure_threshold=2)
    health.record_failure("a", ConnectionError("earlier"), "transient")
    llm = RoutedLlm(
        models={"a": slow("a"), "b": Gated(model="b")},
        router=FallbackStrategy(["a", "b"]),
        hedge_after=TINY,
        health=health,
    )

    await collect(llm.generate_content_async(make_request()))
    state_after_call = health.state("a")
    health.record_failure("a", ConnectionError("later"), "transient")

    assert state_after_call == "closed"  # Not a failure: one failure still short of the threshold.
    assert health.state("a") == "open"  # Not a success: the earlier failure still counted.


async def test_a_half_open_trial_permit_held_by_a_cancelled_loser_is_given_back():
    now = [0.0]
    health = HealthTracker(failure_threshold=1, cooldown=10.0, clock=lambda: now[0])
    health.record_failure("a", ConnectionError("down"), "transient")
    now[0] = 11.0  # The cooldown ended: a's circuit is half-open, one trial may go.
    llm = RoutedLlm(
        models={"a": slow("a"), "b": Gated(model="b")},
        router=FallbackStrategy(["a", "b"]),
        hedge_after=TINY,
        health=health,
    )

    responses = await collect(llm.generate_content_async(make_request()))

    assert route(responses)["key"] == "b"
    assert llm.models["a"].log.requests  # a took the trial, and lost.
    assert health.state("a") == "half_open"
    assert health.is_available("a")


async def test_a_cancelled_loser_keeps_its_rate_budget_reservation():
    limits = RateLimits({"a": Limit(rpm=1)}, clock=lambda: 0.0)
    llm = RoutedLlm(
        models={"a": slow("a"), "b": Gated(model="b")},
        router=FallbackStrategy(["a", "b"]),
        hedge_after=TINY,
        limits=limits,
    )

    await collect(llm.generate_content_async(make_request()))

    assert llm.models["a"].log.requests
    assert not limits.is_available("a")


async def test_a_hedge_skips_a_key_whose_rate_budget_is_spent():
    limits = RateLimits({"b": Limit(rpm=1)}, clock=lambda: 0.0)
    spend = RoutedLlm(
        models={"b": Gated(model="b")}, router=lambda models, request, context: "b", limits=limits
    )
    await collect(spend.generate_content_async(make_request()))
    models = {"a": slow("a"), "b": Gated(model="b"), "c": Gated(model="c")}
    llm = RoutedLlm(
        models=models, router=FallbackStrategy(["a", "b", "c"]), hedge_after={"a": TINY}, limits=limits
    )

    responses = await collect(llm.generate_content_async(make_request()))

    assert (route(responses)["key"], route(responses)["hedged"]) == ("c", ["c"])
    assert models["b"].log.requests == []


# 4. Failures during the race.


async def test_a_failure_during_the_race_asks_the_router_while_the_slow_attempt_goes_on():
    gate = asyncio.Event()
    seen: list[object] = []

    def router(models, llm_request, error_context):
        seen.append(error_context)
        if error_context is None:
            return "a"
        if isinstance(error_context.last_error, HedgeDelay):
            return "b"
        gate.set()  # b failed: a answers, and the router stops b's branch.
        return None

    failure = ConnectionError("b is down")
    models = {"a": Gated(model="a", answer="from a", gate=gate), "b": Gated(model="b", answer=failure)}
    llm = RoutedLlm(models=models, router=router, hedge_after={"a": TINY})

    responses = await collect(llm.generate_content_async(make_request()))

    assert seen[2].last_error is failure
    assert texts(responses) == ["from a"]
    assert (route(responses)["key"], route(responses)["failed_keys"]) == ("a", ["b"])


async def test_a_hedge_that_fails_counts_against_its_keys_health():
    health = HealthTracker(failure_threshold=1)
    models = {"a": slow("a"), "b": Gated(model="b", answer=ConnectionError("down")), "c": Gated(model="c")}
    llm = RoutedLlm(
        models=models, router=FallbackStrategy(["a", "b", "c"]), hedge_after={"a": TINY}, health=health
    )

    await collect(llm.generate_content_async(make_request()))

    assert (health.state("a"), health.state("b"), health.state("c")) == ("closed", "open", "closed")


async def test_a_failed_hedge_is_replaced_by_the_routers_next_pick():
    models = {"a": slow("a"), "b": Gated(model="b", answer=ConnectionError("down")), "c": Gated(model="c")}
    llm = RoutedLlm(models=models, router=FallbackStrategy(["a", "b", "c"]), hedge_after={"a": TINY})

    responses = await collect(llm.generate_content_async(make_request()))

    assert (route(responses)["key"], route(responses)["errors"]) == ("c", {"b": "ConnectionError"})
    assert route(responses)["hedged"] == ["b"]


async def test_the_last_error_propagates_once_nothing_runs_and_the_router_stopped():
    gate = asyncio.Event()
    last = ConnectionError("a is down too")

    def router(models, llm_request, error_context):
        if error_context is None:
            return "a"
        if isinstance(error_context.last_error, HedgeDelay):
            return "b"
        gate.set()  # b failed: a fails next.
        return None

    models = {
        "a": Gated(model="a", answer=last, gate=gate),
        "b": Gated(model="b", answer=ConnectionError("b")),
    }
    llm = RoutedLlm(models=models, router=router, hedge_after={"a": TINY})

    with pytest.raises(ConnectionError) as raised:
        await collect(llm.generate_content_async(make_request()))

    assert raised.value is last


async def test_never_more_than_one_plus_max_hedges_attempts_run_at_once():
    models = {"a": slow("a"), "b": slow("b"), "c": Gated(model="c")}
    llm = RoutedLlm(
        models=models, router=FallbackStrategy(["a", "b", "c"]), hedge_after=TINY, max_hedges=1, deadline=0.05
    )

    with pytest.raises(DeadlineExceeded):
        await collect(llm.generate_content_async(make_request()))

    assert models["b"].log.requests
    assert models["c"].log.requests == []


# 5. Limits.


async def test_each_attempt_edits_its_own_copy_of_the_request():
    def edit(request: LlmRequest) -> None:
        request.contents.append(types.Content(role="user", parts=[types.Part(text="edited by a")]))

    def router(models, llm_request, error_context):
        if error_context is None:
            return "a"
        llm_request.config.labels["hedge"] = "yes"  # The router's edit belongs to the hedge.
        return "b"

    models = {"a": slow("a", on_call=edit), "b": Gated(model="b")}
    llm = RoutedLlm(models=models, router=router, hedge_after=TINY)
    request = make_request()

    await collect(llm.generate_content_async(request))

    [b_request] = models["b"].log.requests
    assert texts([LlmResponse(content=content) for content in b_request.contents]) == ["hello"]
    assert b_request.config.labels == {"team": "a", "hedge": "yes"}
    assert models["a"].log.requests[0].config.labels == {"team": "a"}
    assert (len(request.contents), request.config.labels, request.model) == (1, {"team": "a"}, "caller-model")


async def test_first_response_timeout_cuts_one_attempt_while_the_other_goes_on():
    gate = asyncio.Event()
    seen: list[object] = []

    def router(models, llm_request, error_context):
        seen.append(error_context)
        if error_context is None:
            return "a"
        if isinstance(error_context.last_error, HedgeDelay):
            return "b"
        gate.set()
        return None

    models = {"a": Gated(model="a", answer="from a", gate=gate), "b": slow("b")}
    llm = RoutedLlm(models=models, router=router, hedge_after={"a": TINY}, first_response_timeout={"b": 0.01})

    responses = await collect(llm.generate_content_async(make_request()))

    assert isinstance(seen[2].last_error, AttemptTimeout)
    assert texts(responses) == ["from a"]


async def test_the_deadline_ends_the_race_and_cancels_every_attempt():
    models = {"a": slow("a"), "b": slow("b")}
    llm = RoutedLlm(models=models, router=FallbackStrategy(["a", "b"]), hedge_after=TINY, deadline=0.02)

    with pytest.raises(DeadlineExceeded):
        await collect(llm.generate_content_async(make_request()))

    assert (models["a"].log.closed, models["b"].log.closed) == (1, 1)


# 6. Quantile mode.


async def test_quantile_mode_hedges_after_the_keys_own_recent_quantile():
    latency = LatencyTracker(min_samples=1)
    latency.record("a", TINY)
    latency.record("b", 1000.0)
    llm = RoutedLlm(
        models={"a": slow("a"), "b": Gated(model="b")},
        router=FallbackStrategy(["a", "b"]),
        hedge_after="p95",
        latency=latency,
    )

    responses = await collect(llm.generate_content_async(make_request()))

    assert (route(responses)["key"], route(responses)["hedged"]) == ("b", ["b"])


async def test_quantile_mode_does_not_hedge_a_key_before_it_has_min_samples():
    latency = LatencyTracker(min_samples=2)
    latency.record("a", TINY)
    models = {"a": slow("a"), "b": Gated(model="b")}
    llm = RoutedLlm(
        models=models, router=FallbackStrategy(["a", "b"]), hedge_after="p90", latency=latency, deadline=0.05
    )

    with pytest.raises(DeadlineExceeded):
        await collect(llm.generate_content_async(make_request()))

    assert models["b"].log.requests == []


async def test_a_key_left_out_of_a_hedge_after_mapping_is_not_hedged():
    models = {"a": slow("a"), "b": Gated(model="b")}
    llm = RoutedLlm(
        models=models, router=FallbackStrategy(["a", "b"]), hedge_after={"b": TINY}, deadline=0.05
    )

    with pytest.raises(DeadlineExceeded):
        await collect(llm.generate_content_async(make_request()))

    assert models["b"].log.requests == []


async def test_a_hedge_that_loses_before_answering_records_no_latency_sample():
    latency = LatencyTracker(min_samples=1)
    llm = RoutedLlm(
        models={"a": slow("a"), "b": Gated(model="b")},
        router=FallbackStrategy(["a", "b"]),
        hedge_after=TINY,
        latency=latency,
    )

    await collect(llm.generate_content_async(make_request()))

    assert (latency.quantile("a", 0.5), latency.quantile("b", 0.5) is not None) == (None, True)


# 9. Scope: judges, live connections.


async def test_a_rejected_answer_during_the_race_sends_the_router_round_while_the_other_runs():
    models = {"a": slow("a"), "b": Gated(model="b", answer="bad"), "c": Gated(model="c", answer="good")}
    llm = RoutedLlm(
        models=models,
        router=FallbackStrategy(["a", "b", "c"]),
        hedge_after={"a": TINY},
        accept=lambda key, response: texts([response]) != ["bad"],
    )

    responses = await collect(llm.generate_content_async(make_request()))

    assert texts(responses) == ["good"]
    assert route(responses)["errors"] == {"b": ResponseRejected.__name__}
    assert route(responses)["rejections"] == {"b": "the judge of 'b' rejected the answer"}


async def test_live_connections_are_not_hedged():
    router = recording(["a", "b"])
    models = {"a": ScriptedLlm(model="a"), "b": ScriptedLlm(model="b")}
    llm = RoutedLlm(models=models, router=router, hedge_after=TINY)

    async with llm.connect(make_request()):
        pass

    assert router.seen == [None]


# 10. The hedge hook.


async def test_on_hedge_hears_of_each_hedge_and_the_routers_answer():
    events: list[HedgeEvent] = []

    def router(models, llm_request, error_context):
        return "a" if error_context is None else None

    gate = asyncio.Event()
    llm = RoutedLlm(
        models={"a": Gated(model="model-a", gate=gate), "b": Gated(model="b")},
        router=router,
        hedge_after=TINY,
        on_hedge=lambda event: (events.append(event), gate.set()),
    )

    await collect(llm.generate_content_async(make_request()))

    [event] = events
    assert (event.key, event.model, event.next_key) == ("a", "model-a", None)
    assert event.waited >= TINY


# End to end.


async def test_an_agent_with_tools_is_served_by_the_hedge_through_the_runner():
    script = iter(
        [
            types.Content(role="model", parts=weather_round_trip()[0].parts),
            types.Content(role="model", parts=[types.Part(text="It is sunny.")]),
        ]
    )
    answers = ScriptedLlm(model="b", script=lambda request: next(script))
    llm = RoutedLlm(
        models={"a": slow("a"), "b": answers}, router=FallbackStrategy(["a", "b"]), hedge_after=TINY
    )
    agent = LlmAgent(name="assistant", model=llm, tools=[get_weather])

    events, _ = await run_agent(agent, "Weather in Paris?")

    records = [event.custom_metadata[METADATA_KEY] for event in events if event.custom_metadata]
    assert [(record["key"], record["hedged"]) for record in records] == [("b", ["b"]), ("b", ["b"])]
    assert any(event.get_function_responses() for event in events)
    assert events[-1].content.parts[0].text == "It is sunny."
    assert llm.models["a"].log.cancelled == 2


async def test_the_winners_stream_goes_on_after_its_first_chunk():
    answers = ScriptedLlm(model="b", script=[Stream(["It ", "is ", "sunny."])])
    llm = RoutedLlm(
        models={"a": slow("a"), "b": answers}, router=FallbackStrategy(["a", "b"]), hedge_after=TINY
    )

    responses = await collect(llm.generate_content_async(make_request(), stream=True))

    assert texts(responses) == ["It ", "is ", "sunny.", "It is sunny."]
    assert {route_of["key"] for route_of in (r.custom_metadata[METADATA_KEY] for r in responses)} == {"b"}


async def test_cancelling_the_call_cancels_and_closes_every_attempt():
    models = {"a": slow("a"), "b": slow("b")}
    llm = RoutedLlm(models=models, router=FallbackStrategy(["a", "b"]), hedge_after=TINY)
    call = asyncio.ensure_future(collect(llm.generate_content_async(make_request())))
    await models["b"].log.started.wait()

    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call

    assert (models["a"].log.cancelled, models["b"].log.cancelled) == (1, 1)
    assert (models["a"].log.closed, models["b"].log.closed) == (1, 1)

"""Every routing decision is visible: hooks, OpenTelemetry spans and metrics."""

from __future__ import annotations

import logging

import pytest
from google.adk.agents import LlmAgent
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from routed_llm import FailoverEvent, RoutedLlm, RouteEvent, RoutingError, RoutingPlugin
from routed_llm.strategies import ABTestStrategy, FallbackStrategy, WithFallback
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, make_request, run_agent
from tests.test_hedging import slow

SPANS = InMemorySpanExporter()
METRICS = InMemoryMetricReader()


@pytest.fixture(scope="module", autouse=True)
def otel_sdk():
    """Installs the OpenTelemetry SDK once: global providers cannot be replaced."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(SPANS))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[METRICS]))


@pytest.fixture(autouse=True)
def fresh_spans():
    SPANS.clear()


class FakeClock:
    """A clock that advances one second each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def failing_over(**options) -> RoutedLlm:
    return RoutedLlm(
        models={
            "primary": ScriptedLlm(model="model-p", script=[ConnectionError("down")]),
            "backup": ScriptedLlm(model="model-b", script=["ok"]),
        },
        router=FallbackStrategy(["primary", "backup"]),
        **options,
    )


def routed_span():
    [span] = [span for span in SPANS.get_finished_spans() if "routed_llm.key" in (span.attributes or {})]
    return span


async def test_the_model_call_span_carries_the_route():
    await run_agent(LlmAgent(name="assistant", model=failing_over()), "hi")

    attributes = routed_span().attributes
    assert attributes["routed_llm.key"] == "backup"
    assert attributes["routed_llm.model"] == "model-b"
    assert tuple(attributes["routed_llm.failed_keys"]) == ("primary",)
    assert attributes["routed_llm.attempts"] == 2


async def test_each_failed_attempt_is_a_span_event_with_its_error_type():
    await run_agent(LlmAgent(name="assistant", model=failing_over()), "hi")

    events = [(e.name, dict(e.attributes)) for e in routed_span().events if e.name.startswith("routed_llm")]
    assert events == [
        ("routed_llm.attempt_failed", {"routed_llm.key": "primary", "error.type": "ConnectionError"})
    ]


async def test_the_ab_arm_is_on_the_span():
    strategy = WithFallback(
        ABTestStrategy("exp", {"backup": 1}, default_arm="backup"), fallback_order=["backup"]
    )
    llm = RoutedLlm(models=[ScriptedLlm(model="backup", script=["ok"])], router=strategy)

    await run_agent(LlmAgent(name="assistant", model=llm), "hi", plugins=[RoutingPlugin()])

    assert (
        routed_span().attributes["routed_llm.arm"],
        routed_span().attributes["routed_llm.experiment"],
    ) == (
        "backup",
        "exp",
    )


def counter_points(name: str) -> dict[tuple, int]:
    points: dict[tuple, int] = {}
    for resource in METRICS.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        points[tuple(sorted(point.attributes.items()))] = point.value
    return points


async def test_per_key_counters_count_requests_failures_and_fallbacks():
    before = {name: counter_points(name) for name in ("routed_llm.requests", "routed_llm.failures")}
    llm = failing_over()

    await collect(llm.generate_content_async(make_request()))

    requests = counter_points("routed_llm.requests")
    failure_key = (
        ("error.type", "ConnectionError"),
        ("routed_llm.error_class", "transient"),
        ("routed_llm.key", "primary"),
    )
    fallback_key = (("routed_llm.from_key", "primary"), ("routed_llm.to_key", "backup"))
    for key in ("primary", "backup"):
        attributes = (("routed_llm.key", key),)
        assert requests[attributes] - before["routed_llm.requests"].get(attributes, 0) == 1
    assert (
        counter_points("routed_llm.failures")[failure_key] - before["routed_llm.failures"].get(failure_key, 0)
        == 1
    )
    assert counter_points("routed_llm.fallbacks")[fallback_key] >= 1


async def test_hooks_receive_immutable_events_with_elapsed_time_from_the_clock():
    routes: list[RouteEvent] = []
    failovers: list[FailoverEvent] = []
    llm = failing_over(on_route=routes.append, on_failover=failovers.append, clock=FakeClock())

    await collect(llm.generate_content_async(make_request()))

    assert routes == [
        RouteEvent(key="primary", model="model-p", attempt=1, failed_keys=(), elapsed=1.0),
        RouteEvent(key="backup", model="model-b", attempt=2, failed_keys=("primary",), elapsed=3.0),
    ]
    [failover] = failovers
    assert (failover.key, failover.attempt, failover.next_key, failover.elapsed) == (
        "primary",
        1,
        "backup",
        2.0,
    )
    assert isinstance(failover.error, ConnectionError)
    with pytest.raises(AttributeError):
        failover.key = "other"  # type: ignore[misc]


async def test_async_hooks_are_awaited():
    seen: list[str] = []

    async def on_route(event: RouteEvent) -> None:
        seen.append(event.key)

    await collect(failing_over(on_route=on_route).generate_content_async(make_request()))

    assert seen == ["primary", "backup"]


async def test_the_last_failure_reports_no_next_key():
    failovers: list[FailoverEvent] = []
    llm = RoutedLlm(
        models=[ScriptedLlm(model="a", script=[ConnectionError()])],
        router=FallbackStrategy(["a"]),
        on_failover=failovers.append,
    )

    with pytest.raises(ConnectionError):
        await collect(llm.generate_content_async(make_request()))

    assert failovers[0].next_key is None


async def test_a_hook_that_raises_is_logged_and_never_breaks_the_call(caplog):
    def broken(event: object) -> None:
        raise RuntimeError("hook bug")

    llm = failing_over(on_route=broken, on_failover=broken)

    responses = await collect(llm.generate_content_async(make_request()))

    assert responses[0].custom_metadata["routed_llm"]["key"] == "backup"
    hook_errors = [
        r for r in caplog.records if r.name == "routed_llm.observability" and r.levelno == logging.ERROR
    ]
    assert len(hook_errors) == 3
    assert "hook bug" in hook_errors[0].exc_text


def test_hooks_must_be_callable():
    with pytest.raises(TypeError, match="on_route"):
        RoutedLlm(models=[ScriptedLlm(model="a")], router=lambda *_: "a", on_route="print")  # type: ignore[arg-type]


def raising_router(error: Exception):
    """Picks 'primary' first; raises ``error`` when asked again after a failure."""

    def router(models, llm_request, error_context):
        if error_context is None:
            return "primary"
        raise error

    return router


def primary_fails(router, **options) -> RoutedLlm:
    return RoutedLlm(
        models={
            "primary": ScriptedLlm(model="model-p", script=[ConnectionError("down")]),
            "backup": ScriptedLlm(model="model-b"),
        },
        router=router,
        **options,
    )


async def test_failure_is_reported_to_on_failover_when_the_router_raises_while_handling_it():
    events: list[FailoverEvent] = []
    llm = primary_fails(raising_router(LookupError("router bug")), on_failover=events.append)

    with pytest.raises(LookupError):
        await collect(llm.generate_content_async(make_request()))

    assert [(event.key, type(event.error).__name__, event.next_key) for event in events] == [
        ("primary", "ConnectionError", None)
    ]


async def test_failure_is_counted_when_the_router_picks_an_unknown_key_while_handling_it():
    failure_key = (
        ("error.type", "ConnectionError"),
        ("routed_llm.error_class", "transient"),
        ("routed_llm.key", "primary"),
    )
    before = counter_points("routed_llm.failures").get(failure_key, 0)
    llm = primary_fails(lambda models, request, ctx: "primary" if ctx is None else "no-such-key")

    with pytest.raises(RoutingError):
        await collect(llm.generate_content_async(make_request()))

    assert counter_points("routed_llm.failures")[failure_key] - before == 1


async def test_failure_is_a_span_event_when_the_router_raises_while_handling_it():
    agent = LlmAgent(name="assistant", model=primary_fails(raising_router(LookupError("router bug"))))

    with pytest.raises(LookupError):
        await run_agent(agent, "hi")

    [span] = [span for span in SPANS.get_finished_spans() if span.name.startswith("generate_content")]
    assert [dict(e.attributes) for e in span.events if e.name == "routed_llm.attempt_failed"] == [
        {"routed_llm.key": "primary", "error.type": "ConnectionError"}
    ]


async def test_each_hedge_is_counted_by_the_key_hedged_and_the_winner():
    hedge = (("routed_llm.key", "a"), ("routed_llm.winner", "b"))
    before = counter_points("routed_llm.hedges").get(hedge, 0)
    llm = RoutedLlm(
        models={"a": slow("a"), "b": ScriptedLlm(model="b", script=["ok"])},
        router=FallbackStrategy(["a", "b"]),
        hedge_after=1e-4,
    )

    await collect(llm.generate_content_async(make_request()))

    assert counter_points("routed_llm.hedges")[hedge] - before == 1

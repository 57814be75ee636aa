"""Health-aware routing: a dead provider costs a few requests, not every request.

The tracker runs on a fake clock that the tests move by hand.
"""

from __future__ import annotations

import asyncio

import pytest
from google.genai import errors

from routed_llm import (
    HealthTracker,
    RoutedLlm,
    fall_back_across_providers,
)
from routed_llm.invocation import invocation_scope
from routed_llm.strategies import (
    ABTestStrategy,
    ConnectivityStrategy,
    FallbackStrategy,
    InputSizeStrategy,
    WithFallback,
)
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, make_request, texts


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def unavailable() -> errors.ServerError:
    return errors.ServerError(503, {"error": {"code": 503, "message": "down", "status": "UNAVAILABLE"}})


def tracker(clock: Clock, **options) -> HealthTracker:
    options.setdefault("failure_threshold", 2)
    return HealthTracker(cooldown=30.0, max_cooldown=600.0, clock=clock, **options)


def dead_primary(health: HealthTracker, **options) -> tuple[RoutedLlm, ScriptedLlm]:
    primary = ScriptedLlm(model="p", script=lambda request: unavailable())
    llm = RoutedLlm(
        models={"primary": primary, "backup": ScriptedLlm(model="b", script=lambda request: "from backup")},
        router=FallbackStrategy(["primary", "backup"], **options),
        health=health,
    )
    return llm, primary


async def ask(llm: RoutedLlm) -> list[str]:
    return texts(await collect(llm.generate_content_async(make_request())))


async def test_a_key_that_failed_threshold_times_is_skipped_by_the_strategy():
    health = tracker(Clock())
    llm, primary = dead_primary(health)

    for _ in range(5):
        assert await ask(llm) == ["from backup"]

    assert len(primary.calls) == 2
    assert health.state("primary") == "open"


async def test_after_the_cooldown_one_trial_goes_to_the_key_and_its_success_closes_it():
    clock = Clock()
    health = tracker(clock)
    answers = [unavailable(), unavailable(), "recovered"]
    primary = ScriptedLlm(model="p", script=answers)
    llm = RoutedLlm(
        models={"primary": primary, "backup": ScriptedLlm(model="b", script=lambda request: "from backup")},
        router=FallbackStrategy(["primary", "backup"]),
        health=health,
    )
    await ask(llm)
    await ask(llm)

    clock.now = 31.0

    assert await ask(llm) == ["recovered"]
    assert health.state("primary") == "closed"


async def test_a_permanent_failure_does_not_count_against_the_key():
    health = tracker(Clock(), failure_threshold=1)
    bad_request = errors.ClientError(
        400, {"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}}
    )
    llm = RoutedLlm(
        models={"primary": ScriptedLlm(model="p", script=[bad_request]), "backup": ScriptedLlm(model="b")},
        router=FallbackStrategy(["primary", "backup"]),
        health=health,
    )

    with pytest.raises(errors.ClientError):
        await ask(llm)

    assert health.state("primary") == "closed"


async def test_a_provider_failure_opens_the_key_at_once_whatever_the_policy():
    health = tracker(Clock(), failure_threshold=3)
    stale = errors.ClientError(
        401, {"error": {"code": 401, "message": "bad key", "status": "UNAUTHENTICATED"}}
    )
    llm = RoutedLlm(
        models={
            "primary": ScriptedLlm(model="p", script=[stale]),
            "backup": ScriptedLlm(model="b", script=["b"]),
        },
        router=FallbackStrategy(["primary", "backup"], is_transient=fall_back_across_providers),
        health=health,
    )

    assert await ask(llm) == ["b"]
    assert health.state("primary") == "open"


async def test_an_attempt_timeout_counts_against_the_key():
    class Hangs(ScriptedLlm):
        async def generate_content_async(self, llm_request, stream=False):
            await asyncio.Event().wait()
            yield  # pragma: no cover

    health = tracker(Clock(), failure_threshold=1)
    llm = RoutedLlm(
        models={"primary": Hangs(model="p"), "backup": ScriptedLlm(model="b", script=["b"])},
        router=FallbackStrategy(["primary", "backup"]),
        health=health,
        first_response_timeout={"primary": 0.01},
    )

    assert await ask(llm) == ["b"]
    assert health.state("primary") == "open"


async def test_when_every_key_is_unavailable_the_one_whose_cooldown_ends_soonest_is_tried():
    clock = Clock()
    health = tracker(clock, failure_threshold=1)
    health.record_failure("backup", unavailable(), "transient")
    clock.now = 10.0
    health.record_failure("primary", unavailable(), "transient")
    backup = ScriptedLlm(model="b", script=["b"])
    llm = RoutedLlm(
        models={"primary": ScriptedLlm(model="p"), "backup": backup},
        router=FallbackStrategy(["primary", "backup"]),
        health=health,
    )

    assert await ask(llm) == ["b"]


async def test_connectivity_picks_the_offline_key_while_the_online_one_is_open():
    health = tracker(Clock(), failure_threshold=1)
    health.record_failure("cloud", unavailable(), "transient")
    llm = RoutedLlm(
        models={"cloud": ScriptedLlm(model="c"), "on_device": ScriptedLlm(model="d", script=["device"])},
        router=ConnectivityStrategy(is_online=lambda: True),
        health=health,
    )

    assert await ask(llm) == ["device"]


async def test_an_ab_arm_that_is_open_is_served_by_the_tail_and_still_recorded():
    health = tracker(Clock(), failure_threshold=1)
    health.record_failure("pro", unavailable(), "transient")
    llm = RoutedLlm(
        models={"pro": ScriptedLlm(model="p"), "flash": ScriptedLlm(model="f", script=["flash"])},
        router=WithFallback(ABTestStrategy("exp", {"pro": 1}, default_arm="pro"), fallback_order=["flash"]),
        health=health,
    )

    with invocation_scope(None):  # Outside ADK, no user: the default arm.
        [response] = await collect(llm.generate_content_async(make_request()))

    record = response.custom_metadata["routed_llm"]
    assert (record["key"], record["arm"]) == ("flash", "pro")


async def test_one_tracker_serves_several_routed_models_sharing_a_deployment():
    health = tracker(Clock())
    first, _ = dead_primary(health)
    second, second_primary = dead_primary(health)

    await ask(first)
    await ask(first)
    await ask(second)

    assert second_primary.calls == []


async def test_a_plain_router_reads_the_tracker_it_was_given():
    health = tracker(Clock(), failure_threshold=1)
    health.record_failure("primary", unavailable(), "transient")

    def router(models, llm_request, error_context):
        return "primary" if health.is_available("primary") else "backup"

    llm = RoutedLlm(
        models={"primary": ScriptedLlm(model="p"), "backup": ScriptedLlm(model="b", script=["b"])},
        router=router,
        health=health,
    )

    assert await ask(llm) == ["b"]


def test_health_must_be_a_health_tracker():
    with pytest.raises(TypeError, match="HealthTracker"):
        RoutedLlm(models=[ScriptedLlm(model="a")], router=lambda *_: "a", health=object())  # type: ignore[arg-type]


async def test_input_size_picks_its_other_key_while_the_chosen_one_is_open():
    health = tracker(Clock(), failure_threshold=1)
    health.record_failure("on_device", unavailable(), "transient")
    llm = RoutedLlm(
        models={"on_device": ScriptedLlm(model="d"), "cloud": ScriptedLlm(model="c", script=["cloud"])},
        router=InputSizeStrategy(max_chars=1000),
        health=health,
    )

    assert await ask(llm) == ["cloud"]

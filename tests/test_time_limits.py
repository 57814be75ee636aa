"""Time limits: a stalled model costs one attempt, a silent stream is cut, a call has a budget.

Models here wait on events nobody sets, and the limits are tiny: the tests
assert what happened, never how long it took.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

import pytest
from google.adk.models.base_llm import BaseLlm
from google.adk.models.base_llm_connection import BaseLlmConnection
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.genai import errors, types
from pydantic import ConfigDict, PrivateAttr

from routed_llm import AttemptTimeout, DeadlineExceeded, RoutedLlm, StreamStalled
from routed_llm.strategies import FallbackStrategy
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, in_order, make_request, texts

TINY = 0.01
# For deadlines that must outlast a first attempt failing at once, even on a
# loaded machine, and then run out while the next model hangs.
OUTLASTS_A_FAILURE = 0.5


class Hanging(BaseLlm):
    """Answers ``before`` chunks, then waits forever; records how its stream ended."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    before: int = 0
    report_cancel_as: type[Exception] | None = None
    _closed: list[str] = PrivateAttr(default_factory=list)

    @property
    def closed(self) -> list[str]:
        return list(self._closed)

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        try:
            for index in range(self.before):
                yield LlmResponse(
                    content=types.Content(role="model", parts=[types.Part(text=f"chunk {index}")]),
                    partial=True,
                )
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self._closed.append("cancelled")
            if self.report_cancel_as is not None:
                raise self.report_cancel_as("aborted") from None
            raise
        except GeneratorExit:
            self._closed.append("closed")
            raise

    @asynccontextmanager
    async def connect(self, llm_request: LlmRequest) -> AsyncIterator[BaseLlmConnection]:
        await asyncio.Event().wait()
        yield  # type: ignore[misc]  # pragma: no cover


async def test_a_model_silent_past_first_response_timeout_is_cut_and_the_router_gets_attempt_timeout():
    router = in_order(["primary", "backup"])
    llm = RoutedLlm(
        models={"primary": Hanging(model="p"), "backup": ScriptedLlm(model="b", script=["from backup"])},
        router=router,
        first_response_timeout=TINY,
    )

    responses = await collect(llm.generate_content_async(make_request()))

    assert texts(responses) == ["from backup"]
    error = router.seen[1].last_error
    assert isinstance(error, AttemptTimeout)
    assert (error.key, error.timeout) == ("primary", TINY)


async def test_the_timed_out_attempt_is_cancelled():
    primary = Hanging(model="p")
    llm = RoutedLlm(
        models={"primary": primary, "backup": ScriptedLlm(model="b", script=["ok"])},
        router=in_order(["primary", "backup"]),
        first_response_timeout=TINY,
    )

    await collect(llm.generate_content_async(make_request()))

    assert primary.closed == ["cancelled"]


async def test_a_timeout_is_an_attempt_timeout_even_when_the_model_reports_its_cancellation_as_an_error():
    router = in_order(["primary", "backup"])
    llm = RoutedLlm(
        models={
            "primary": Hanging(model="p", report_cancel_as=ConnectionError),
            "backup": ScriptedLlm(model="b", script=["ok"]),
        },
        router=router,
        first_response_timeout=TINY,
    )

    await collect(llm.generate_content_async(make_request()))

    error = router.seen[1].last_error
    assert isinstance(error, AttemptTimeout)
    assert isinstance(error.__cause__, ConnectionError)


async def test_every_strategy_fails_over_on_an_attempt_timeout():
    llm = RoutedLlm(
        models={"primary": Hanging(model="p"), "backup": ScriptedLlm(model="b", script=["from backup"])},
        router=FallbackStrategy(["primary", "backup"]),
        first_response_timeout=TINY,
    )

    assert texts(await collect(llm.generate_content_async(make_request()))) == ["from backup"]


class Slow(ScriptedLlm):
    """Answers after ten times TINY: past a TINY limit, which asyncio's timers fire first."""

    async def generate_content_async(self, llm_request, stream=False):
        await asyncio.sleep(10 * TINY)
        async for response in super().generate_content_async(llm_request, stream):
            yield response


async def test_a_key_left_out_of_the_timeout_mapping_has_no_limit():
    llm = RoutedLlm(
        models={"primary": Slow(model="p", script=["from primary"]), "backup": ScriptedLlm(model="b")},
        router=in_order(["primary", "backup"]),
        first_response_timeout={"backup": TINY},
    )

    assert texts(await collect(llm.generate_content_async(make_request()))) == ["from primary"]


async def test_a_key_in_the_timeout_mapping_has_its_limit():
    llm = RoutedLlm(
        models={"primary": Slow(model="p", script=["late"]), "backup": ScriptedLlm(model="b", script=["b"])},
        router=in_order(["primary", "backup"]),
        first_response_timeout={"primary": TINY},
    )

    assert texts(await collect(llm.generate_content_async(make_request()))) == ["b"]


async def test_a_stream_silent_past_idle_timeout_raises_stream_stalled_without_failover():
    primary = Hanging(model="p", before=1)
    router = in_order(["primary", "backup"])
    llm = RoutedLlm(
        models={"primary": primary, "backup": ScriptedLlm(model="b")},
        router=router,
        idle_timeout=TINY,
    )
    received: list[LlmResponse] = []

    async def consume() -> None:
        async for response in llm.generate_content_async(make_request(), stream=True):
            received.append(response)

    with pytest.raises(StreamStalled) as raised:
        await consume()

    assert texts(received) == ["chunk 0"]
    assert (raised.value.key, raised.value.timeout) == ("primary", TINY)
    assert router.seen == [None]


async def test_the_stalled_stream_is_closed():
    primary = Hanging(model="p", before=1)
    llm = RoutedLlm(models={"primary": primary}, router=lambda *_: "primary", idle_timeout=TINY)

    with pytest.raises(StreamStalled):
        await collect(llm.generate_content_async(make_request(), stream=True))

    assert primary.closed == ["cancelled"]


def unavailable() -> errors.ServerError:
    return errors.ServerError(503, {"error": {"code": 503, "message": "down", "status": "UNAVAILABLE"}})


async def test_a_deadline_that_runs_out_raises_deadline_exceeded_chained_to_the_last_model_error():
    first_error = unavailable()
    router = in_order(["primary", "backup"])
    llm = RoutedLlm(
        models={"primary": ScriptedLlm(model="p", script=[first_error]), "backup": Hanging(model="b")},
        router=router,
        deadline=OUTLASTS_A_FAILURE,
    )

    with pytest.raises(DeadlineExceeded) as raised:
        await collect(llm.generate_content_async(make_request()))

    assert raised.value.__cause__ is first_error
    assert (raised.value.deadline, raised.value.key) == (OUTLASTS_A_FAILURE, "backup")


async def test_the_router_is_not_asked_again_once_the_deadline_ran_out():
    router = in_order(["primary", "backup", "third"])
    llm = RoutedLlm(
        models={
            "primary": ScriptedLlm(model="p", script=[unavailable()]),
            "backup": Hanging(model="b"),
            "third": ScriptedLlm(model="t", script=["too late"]),
        },
        router=router,
        deadline=OUTLASTS_A_FAILURE,
    )

    with pytest.raises(DeadlineExceeded):
        await collect(llm.generate_content_async(make_request()))

    assert len(router.seen) == 2


async def test_the_deadline_caps_a_longer_first_response_timeout():
    llm = RoutedLlm(
        models={"primary": Hanging(model="p"), "backup": ScriptedLlm(model="b")},
        router=in_order(["primary", "backup"]),
        first_response_timeout=3600.0,
        deadline=TINY,
    )

    with pytest.raises(DeadlineExceeded) as raised:
        await collect(llm.generate_content_async(make_request()))

    assert raised.value.__cause__ is None


async def test_first_response_timeout_bounds_opening_a_live_connection():
    router = in_order(["primary", "backup"])
    llm = RoutedLlm(
        models={"primary": Hanging(model="p"), "backup": ScriptedLlm(model="b", script=["live"])},
        router=router,
        first_response_timeout=TINY,
    )

    async with llm.connect(make_request()) as connection:
        responses = await collect(connection.receive())

    assert texts(responses) == ["live"]
    assert isinstance(router.seen[1].last_error, AttemptTimeout)


async def test_a_call_cancelled_from_outside_is_not_failed_over_even_with_a_time_limit():
    backup = ScriptedLlm(model="b", script=["ok"])
    llm = RoutedLlm(
        models={"primary": Hanging(model="p"), "backup": backup},
        router=in_order(["primary", "backup"]),
        first_response_timeout=3600.0,
    )

    with pytest.raises(TimeoutError) as raised:
        async with asyncio.timeout(TINY):
            await collect(llm.generate_content_async(make_request()))

    assert not isinstance(raised.value, AttemptTimeout)
    assert backup.calls == []


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"first_response_timeout": 0}, ValueError, "positive"),
        ({"first_response_timeout": -1.0}, ValueError, "positive"),
        ({"idle_timeout": float("nan")}, ValueError, "finite"),
        ({"deadline": float("inf")}, ValueError, "finite"),
        ({"deadline": True}, TypeError, "number of seconds"),
        ({"idle_timeout": "30"}, TypeError, "number of seconds"),
        ({"first_response_timeout": {"nope": 1.0}}, ValueError, "'nope'"),
        ({"first_response_timeout": {"a": 0}}, ValueError, "first_response_timeout\\['a'\\]"),
    ],
)
def test_time_limits_are_checked_at_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        RoutedLlm(models=[ScriptedLlm(model="a")], router=lambda *_: "a", **kwargs)


async def test_a_nested_routed_llms_deadline_is_a_failure_the_outer_one_fails_over_from():
    inner = RoutedLlm(models={"slow": Hanging(model="s")}, router=lambda *_: "slow", deadline=TINY)
    outer = RoutedLlm(
        models={"inner": inner, "backup": ScriptedLlm(model="b", script=["backup answered"])},
        router=in_order(["inner", "backup"]),
    )

    assert texts(await collect(outer.generate_content_async(make_request()))) == ["backup answered"]


@pytest.mark.parametrize(
    "error", [AttemptTimeout("k", 1.5), StreamStalled("k", 2.0), DeadlineExceeded(3.0, key="k")]
)
def test_time_limit_errors_survive_pickling(error):
    import pickle

    copy = pickle.loads(pickle.dumps(error))

    assert (type(copy), str(copy)) == (type(error), str(error))

"""Judges (``RoutedLlm(accept=...)``): an answer is held, judged, then output or failed over."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Literal

import pytest
from google.adk.agents import LlmAgent
from google.adk.models.llm_response import LlmResponse
from google.genai import types

from routed_llm import (
    DeadlineExceeded,
    HealthTracker,
    NoResponse,
    ResponseRejected,
    RoutedLlm,
    classify_error,
)
from routed_llm.judges import min_confidence
from routed_llm.strategies import FallbackStrategy
from routed_llm.testing import ScriptedLlm, Stream
from tests.conftest import collect, in_order, make_request, run_agent, texts
from tests.test_time_limits import TINY, Hanging


def answer(text: str, *, confidence: float | None = None) -> LlmResponse:
    """A final response, carrying ``log(confidence)`` as its average log-probability."""
    return LlmResponse(
        content=types.Content(role="model", parts=[types.Part(text=text)]),
        avg_logprobs=None if confidence is None else math.log(confidence),
    )


def device_then_cloud(device_script, judge, *, cloud_script=None, **options) -> RoutedLlm:
    return RoutedLlm(
        models={
            "device": ScriptedLlm(model="device", script=device_script),
            "cloud": ScriptedLlm(model="cloud", script=cloud_script or (lambda request: "from cloud")),
        },
        router=options.pop("router", None) or FallbackStrategy(["device", "cloud"]),
        accept={"device": judge},
        **options,
    )


async def ask(llm: RoutedLlm, *, stream: bool = False) -> list[LlmResponse]:
    return await collect(llm.generate_content_async(make_request(), stream=stream))


def route(response: LlmResponse) -> dict:
    return response.custom_metadata["routed_llm"]


async def test_an_accepted_answer_is_output_by_its_key():
    llm = device_then_cloud(["from device"], lambda key, response: True)

    responses = await ask(llm)

    assert texts(responses) == ["from device"]
    assert route(responses[0])["key"] == "device"


async def test_a_judge_returning_false_fails_over_through_the_fallback_strategy():
    llm = device_then_cloud(["from device"], lambda key, response: False)

    responses = await ask(llm)

    assert texts(responses) == ["from cloud"]
    assert route(responses[0])["errors"] == {"device": "ResponseRejected"}


async def test_a_reason_string_rejects_and_reaches_the_router_with_the_response():
    router = in_order(["device", "cloud"])
    llm = device_then_cloud(["unsure"], lambda key, response: "too vague", router=router)

    await ask(llm)

    rejected = router.seen[1].last_error
    assert isinstance(rejected, ResponseRejected)
    assert (rejected.key, rejected.reason, texts([rejected.response])) == ("device", "too vague", ["unsure"])


async def test_an_async_judge_is_awaited():
    async def judge(key, response):
        await asyncio.sleep(0)
        return "rejected after awaiting"

    responses = await ask(device_then_cloud(["from device"], judge))

    assert texts(responses) == ["from cloud"]


def test_a_judges_rejection_is_transient():
    rejection = ResponseRejected("device", answer("unsure"), "too vague")

    assert classify_error(rejection) == "transient"


async def test_the_judge_sees_the_key_and_the_final_response():
    seen = []

    def judge(key, response):
        seen.append((key, response.partial, texts([response])))
        return True

    await ask(device_then_cloud([Stream(["a", "b"])], judge), stream=True)

    assert seen == [("device", None, ["ab"])]


async def test_held_streaming_partials_are_output_in_order_after_the_verdict():
    received: list[LlmResponse] = []
    output_when_judged = []

    def judge(key, response):
        output_when_judged.append(len(received))
        return True

    llm = device_then_cloud([Stream(["a", "b", "c"])], judge)
    async for response in llm.generate_content_async(make_request(), stream=True):
        received.append(response)

    assert output_when_judged == [0]
    assert [(texts([r]), r.partial) for r in received] == [
        (["a"], True),
        (["b"], True),
        (["c"], True),
        (["abc"], None),
    ]


async def test_an_unjudged_key_streams_each_chunk_as_it_arrives():
    more = asyncio.Event()
    llm = device_then_cloud(
        [ConnectionError("device down")],
        lambda key, response: True,
        cloud_script=[Stream(["first ", "second"], wait=more)],
    )
    responses = llm.generate_content_async(make_request(), stream=True)

    first = await anext(responses)
    more.set()
    rest = await collect(responses)

    assert (texts([first]), route(first)["key"]) == (["first "], "cloud")
    assert texts(rest) == ["second", "first second"]


async def test_a_rejected_answer_is_output_marked_rejected_when_the_cloud_is_down():
    llm = device_then_cloud(
        [answer("a guess")], lambda key, response: "unsure", cloud_script=[ConnectionError("cloud down")]
    )

    responses = await ask(llm)

    assert texts(responses) == ["a guess"]
    assert route(responses[0]) == {
        "key": "device",
        "model": "device",
        "failed_keys": ["device", "cloud"],
        "errors": {"device": "ResponseRejected", "cloud": "ConnectionError"},
        "rejections": {"device": "unsure"},
        "attempts": 2,
        "rejected": "unsure",
    }


async def test_a_rejected_answer_is_output_when_the_router_stops_after_it():
    llm = RoutedLlm(
        models={"device": ScriptedLlm(model="device", script=[Stream(["a ", "guess"])])},
        router=FallbackStrategy(["device"]),
        accept=lambda key, response: False,
    )

    responses = await ask(llm, stream=True)

    assert texts(responses) == ["a ", "guess", "a guess"]
    assert {route(response)["rejected"] for response in responses} == {
        "the judge of 'device' rejected the answer"
    }


async def test_one_judge_given_for_every_key_judges_each_of_them():
    judged = []

    def judge(key, response):
        judged.append(key)
        return key == "cloud"

    llm = RoutedLlm(
        models={
            "device": ScriptedLlm(model="device", script=["d"]),
            "cloud": ScriptedLlm(model="cloud", script=["c"]),
        },
        router=FallbackStrategy(["device", "cloud"]),
        accept=judge,
    )

    responses = await ask(llm)

    assert (judged, texts(responses)) == (["device", "cloud"], ["c"])


async def test_a_rejection_does_not_count_against_the_keys_circuit():
    health = HealthTracker(failure_threshold=1, clock=lambda: 0.0)
    device = ScriptedLlm(model="device", script=lambda request: "unsure")
    llm = RoutedLlm(
        models={"device": device, "cloud": ScriptedLlm(model="cloud", script=lambda request: "sure")},
        router=FallbackStrategy(["device", "cloud"]),
        accept={"device": lambda key, response: False},
        health=health,
    )

    for _ in range(3):
        await ask(llm)

    assert (health.state("device"), len(device.calls)) == ("closed", 3)


async def test_a_failure_while_the_answer_is_held_fails_over_and_counts_against_the_key():
    health = HealthTracker(failure_threshold=1, clock=lambda: 0.0)
    llm = device_then_cloud(
        [Stream(["a", "b"], error=ConnectionError("cut"))], lambda key, response: True, health=health
    )

    responses = await ask(llm, stream=True)

    assert texts(responses) == ["from cloud"]
    assert health.state("device") == "open"


async def test_a_judges_annotations_are_recorded_with_the_answer_it_accepted():
    llm = device_then_cloud([answer("sure", confidence=0.9)], min_confidence(0.6))

    responses = await ask(llm)

    assert route(responses[0])["confidence"] == pytest.approx(0.9)


async def test_a_rejected_answers_annotations_are_not_recorded_with_the_answer_output_instead():
    llm = device_then_cloud([answer("unsure", confidence=0.2)], min_confidence(0.6))

    responses = await ask(llm)

    assert texts(responses) == ["from cloud"]
    assert "confidence" not in route(responses[0])


async def test_what_a_judge_raises_reaches_the_caller_without_failover():
    bug = KeyError("the judge's own bug")

    def judge(key, response):
        raise bug

    llm = device_then_cloud(["from device"], judge)

    with pytest.raises(KeyError) as raised:
        await ask(llm)

    assert raised.value is bug
    assert llm.models["cloud"].calls == []


async def test_a_judge_returning_neither_bool_nor_string_is_a_type_error():
    llm = device_then_cloud(["from device"], lambda key, response: None)

    with pytest.raises(TypeError, match="returned None"):
        await ask(llm)


def test_accept_naming_an_unknown_key_is_rejected_at_construction():
    with pytest.raises(ValueError, match=r"\['phone'\]"):
        RoutedLlm(models=[ScriptedLlm(model="device")], router=in_order(["device"]), accept={"phone": bool})


def test_a_judge_that_is_not_callable_is_rejected_at_construction():
    with pytest.raises(TypeError, match="judge for 'device'"):
        RoutedLlm(models=[ScriptedLlm(model="device")], router=in_order(["device"]), accept={"device": 0.6})


def test_accept_that_is_neither_a_judge_nor_a_mapping_is_rejected_at_construction():
    with pytest.raises(TypeError, match="accept"):
        RoutedLlm(models=[ScriptedLlm(model="device")], router=in_order(["device"]), accept=0.6)


async def test_an_agent_run_is_answered_by_the_cloud_when_the_device_is_unsure():
    llm = device_then_cloud([answer("Paris?", confidence=0.3)], min_confidence(0.6))
    agent = LlmAgent(name="assistant", model=llm)

    _, stored = await run_agent(agent, "capital of France?")

    answers = [event for event in stored if event.author == "assistant"]
    assert [texts([event])[0] for event in answers] == ["from cloud"]
    assert answers[0].custom_metadata["routed_llm"]["failed_keys"] == ["device"]


# min_confidence


def judged(confidence: float | None, judge=None) -> bool | str:
    return (judge or min_confidence(0.6))("device", answer("x", confidence=confidence))


def test_min_confidence_accepts_an_answer_at_or_above_the_threshold():
    assert judged(0.6) is True


def test_min_confidence_rejects_an_answer_below_the_threshold_naming_its_confidence():
    assert judged(0.25) == "confidence 0.250 is below 0.6"


def test_min_confidence_accepts_an_answer_without_logprobs_and_warns_once_per_key(caplog):
    judge = min_confidence(0.6)

    with caplog.at_level(logging.WARNING, logger="routed_llm.judges"):
        verdicts = [judge(key, answer("x")) for key in ("device", "device", "phone")]

    assert verdicts == [True, True, True]
    assert [record.args for record in caplog.records] == [("device",), ("phone",)]


def test_min_confidence_with_missing_reject_rejects_an_answer_without_logprobs():
    assert "no log-probabilities" in judged(None, min_confidence(0.6, missing="reject"))


@pytest.mark.parametrize("threshold", [0, -0.1, 1.5, float("nan")])
def test_min_confidence_threshold_outside_zero_to_one_is_rejected(threshold):
    with pytest.raises(ValueError, match="above 0 and at most 1"):
        min_confidence(threshold)


@pytest.mark.parametrize("threshold", [True, "0.6", None])
def test_min_confidence_threshold_that_is_not_a_number_is_rejected(threshold):
    with pytest.raises(TypeError, match="number"):
        min_confidence(threshold)


def test_min_confidence_missing_must_be_accept_or_reject():
    with pytest.raises(ValueError, match="'accept' or 'reject'"):
        min_confidence(0.6, missing="maybe")


async def test_a_rejected_answer_is_output_when_the_deadline_runs_out_on_the_next_model():
    llm = RoutedLlm(
        models={
            "device": ScriptedLlm(model="device", script=[answer("a guess")]),
            "cloud": Hanging(model="cloud"),
        },
        router=FallbackStrategy(["device", "cloud"]),
        accept={"device": lambda key, response: "unsure"},
        deadline=0.5,  # outlasts the device answering at once, runs out while the cloud hangs
    )

    responses = await ask(llm)

    assert texts(responses) == ["a guess"]
    assert (route(responses[0])["rejected"], route(responses[0])["errors"]) == (
        "unsure",
        {"device": "ResponseRejected", "cloud": "DeadlineExceeded"},
    )


async def test_an_unsure_answer_is_output_rather_than_the_next_models_error_response():
    llm = device_then_cloud(
        [answer("a guess")],
        lambda key, response: "unsure",
        cloud_script=[LlmResponse(error_code="OTHER", finish_reason=types.FinishReason.OTHER)],
    )

    responses = await ask(llm)

    assert (texts(responses), route(responses[0])["key"]) == (["a guess"], "device")


# The deadline bounds holding and judging


class Announced(asyncio.Event):
    """An event nobody sets; ``waited`` is set once something waits on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited = asyncio.Event()

    async def wait(self) -> Literal[True]:
        self.waited.set()
        return await super().wait()


def never_decides(cancelled: list[str], never: asyncio.Event | None = None):
    """An async judge (an LLM-as-judge, say) that waits on ``never``, an event nobody sets.

    It records in ``cancelled`` each key whose judging was cancelled.
    """

    async def judge(key, response):
        try:
            await (never or asyncio.Event()).wait()
        except asyncio.CancelledError:
            cancelled.append(key)
            raise
        return True  # pragma: no cover

    return judge


async def test_the_deadline_cuts_a_judged_answer_still_streaming_and_raises_deadline_exceeded():
    device = Hanging(model="device", before=1)
    llm = RoutedLlm(
        models={"device": device, "cloud": ScriptedLlm(model="cloud", script=["from cloud"])},
        router=FallbackStrategy(["device", "cloud"]),
        accept={"device": lambda key, response: True},
        deadline=TINY,
    )

    with pytest.raises(DeadlineExceeded) as raised:
        await ask(llm, stream=True)

    assert (raised.value.key, device.closed) == ("device", ["cancelled"])


async def test_the_deadline_cancels_a_judge_still_deciding_and_raises_deadline_exceeded():
    cancelled: list[str] = []
    llm = device_then_cloud(["from device"], never_decides(cancelled), deadline=TINY)

    with pytest.raises(DeadlineExceeded) as raised:
        await ask(llm)

    assert (raised.value.key, cancelled) == ("device", ["device"])
    assert llm.models["cloud"].calls == []


async def test_an_earlier_rejected_answer_is_output_when_the_deadline_cuts_the_next_judge():
    cancelled: list[str] = []
    llm = RoutedLlm(
        models={
            "device": ScriptedLlm(model="device", script=[answer("a guess")]),
            "cloud": ScriptedLlm(model="cloud", script=[answer("from cloud")]),
        },
        router=FallbackStrategy(["device", "cloud"]),
        accept={"device": lambda key, response: "unsure", "cloud": never_decides(cancelled)},
        deadline=TINY,
    )

    responses = await ask(llm)

    assert (texts(responses), cancelled) == (["a guess"], ["cloud"])
    assert route(responses[0])["errors"] == {"device": "ResponseRejected", "cloud": "DeadlineExceeded"}


async def test_an_agent_streaming_through_a_runner_gets_the_unsure_answer_when_the_deadline_cuts_the_cloud():
    llm = RoutedLlm(
        models={
            "device": ScriptedLlm(model="device", script=[Stream(["Paris", "?"])]),
            "cloud": Hanging(model="cloud", before=1),
        },
        router=FallbackStrategy(["device", "cloud"]),
        accept={"device": lambda key, response: "unsure", "cloud": lambda key, response: True},
        deadline=TINY,
    )
    agent = LlmAgent(name="assistant", model=llm)

    _, stored = await run_agent(agent, "capital of France?", streaming=True)

    answers = [event for event in stored if event.author == "assistant"]
    assert [texts([event])[0] for event in answers] == ["Paris?"]
    assert answers[0].custom_metadata["routed_llm"]["rejected"] == "unsure"


# A call that outputs nothing leaves the request as the caller passed it in


class Edits(ScriptedLlm):
    """A scripted model that edits the request it is given, as providers do."""

    async def generate_content_async(self, llm_request, stream=False):
        llm_request.contents.append(types.Content(role="user", parts=[types.Part(text="edited")]))
        llm_request.config.labels["edited"] = "by the model"
        async for response in super().generate_content_async(llm_request, stream):
            yield response


def as_passed(request) -> tuple:
    return request.model, request.model_dump()


async def test_a_call_cancelled_while_its_answer_is_held_leaves_the_request_as_passed_in():
    never = Announced()
    llm = RoutedLlm(
        models={"device": Edits(model="device", script=[Stream(["a", "b"], wait=never)])},
        router=FallbackStrategy(["device"]),
        accept=lambda key, response: True,
    )
    request = make_request("question")
    before = as_passed(request)
    task = asyncio.create_task(collect(llm.generate_content_async(request, stream=True)))
    await never.waited.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert as_passed(request) == before


async def test_a_call_cancelled_while_its_answer_is_judged_leaves_the_request_as_passed_in():
    never = Announced()
    llm = RoutedLlm(
        models={"device": Edits(model="device", script=["from device"])},
        router=FallbackStrategy(["device"]),
        accept=never_decides([], never),
    )
    request = make_request("question")
    before = as_passed(request)
    task = asyncio.create_task(collect(llm.generate_content_async(request)))
    await never.waited.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert as_passed(request) == before


async def test_a_call_whose_judge_raises_leaves_the_request_as_passed_in():
    def judge(key, response):
        raise KeyError("the judge's own bug")

    llm = RoutedLlm(
        models={"device": Edits(model="device", script=["from device"])},
        router=FallbackStrategy(["device"]),
        accept=judge,
    )
    request = make_request("question")
    before = as_passed(request)

    with pytest.raises(KeyError):
        await collect(llm.generate_content_async(request))

    assert as_passed(request) == before


async def test_a_call_the_deadline_cuts_while_judging_leaves_the_request_as_passed_in():
    llm = RoutedLlm(
        models={"device": Edits(model="device", script=["from device"])},
        router=FallbackStrategy(["device"]),
        accept=never_decides([]),
        deadline=TINY,
    )
    request = make_request("question")
    before = as_passed(request)

    with pytest.raises(DeadlineExceeded):
        await collect(llm.generate_content_async(request))

    assert as_passed(request) == before


async def test_an_accepted_answer_keeps_the_request_its_model_was_sent():
    llm = RoutedLlm(
        models={"device": Edits(model="device", script=["from device"])},
        router=FallbackStrategy(["device"]),
        accept=lambda key, response: True,
    )
    request = make_request("question")

    await collect(llm.generate_content_async(request))

    assert (request.model, request.config.labels["edited"]) == ("device", "by the model")


# An attempt that ends with no response is a failure before output


class Silent(ScriptedLlm):
    """A model whose answer ends before its first response, as Gemini's can."""

    async def generate_content_async(self, llm_request, stream=False):
        self._calls.append(None)
        return
        yield  # pragma: no cover


async def test_an_attempt_ending_without_a_response_fails_over_with_no_response():
    router = in_order(["primary", "backup"])
    llm = RoutedLlm(
        models={"primary": Silent(model="primary"), "backup": ScriptedLlm(model="b", script=["from backup"])},
        router=router,
    )

    responses = await ask(llm, stream=True)

    assert texts(responses) == ["from backup"]
    error = router.seen[1].last_error
    assert (type(error), error.key) == (NoResponse, "primary")


async def test_an_unsure_answer_is_output_when_the_next_model_answers_nothing():
    llm = RoutedLlm(
        models={
            "device": ScriptedLlm(model="device", script=[answer("a guess")]),
            "cloud": Silent(model="c"),
        },
        router=FallbackStrategy(["device", "cloud"]),
        accept={"device": lambda key, response: "unsure"},
    )

    responses = await ask(llm, stream=True)

    assert texts(responses) == ["a guess"]
    assert route(responses[0])["errors"] == {"device": "ResponseRejected", "cloud": "NoResponse"}


async def test_an_attempt_ending_without_a_response_counts_against_the_key():
    health = HealthTracker(failure_threshold=1, clock=lambda: 0.0)
    llm = RoutedLlm(
        models={"primary": Silent(model="primary"), "backup": ScriptedLlm(model="b", script=["from backup"])},
        router=FallbackStrategy(["primary", "backup"]),
        health=health,
    )

    await ask(llm)

    assert health.state("primary") == "open"


async def test_a_single_model_answering_nothing_raises_no_response():
    llm = RoutedLlm(models={"only": Silent(model="only")}, router=FallbackStrategy(["only"]))

    with pytest.raises(NoResponse):
        await ask(llm)


# A later refusal is not overridden


async def test_a_refusal_after_an_unsure_answer_is_output_as_it_is():
    refusal = LlmResponse(error_code="SAFETY", finish_reason=types.FinishReason.SAFETY)
    llm = device_then_cloud([answer("a guess")], lambda key, response: "unsure", cloud_script=[refusal])

    responses = await ask(llm)

    assert [response.model_copy(update={"custom_metadata": None}) for response in responses] == [refusal]
    assert route(responses[0]) == {
        "key": "cloud",
        "model": "cloud",
        "failed_keys": ["device", "cloud"],
        "errors": {"device": "ResponseRejected", "cloud": "ResponseRejected"},
        "rejections": {"device": "unsure", "cloud": "the model answered with the error SAFETY"},
        "attempts": 2,
        "rejected": "the model answered with the error SAFETY",
    }


async def test_a_refusal_before_an_unsure_answer_is_output_rather_than_it():
    refusal = LlmResponse(error_code="SAFETY", finish_reason=types.FinishReason.SAFETY)
    llm = device_then_cloud(
        [answer("a guess")],
        lambda key, response: "unsure",
        cloud_script=[refusal],
        router=in_order(["cloud", "device"]),
    )

    responses = await ask(llm)

    assert (responses[0].error_code, route(responses[0])["key"]) == ("SAFETY", "cloud")


async def test_the_record_of_an_answer_after_a_rejection_says_why_the_rejected_answer_was_rejected():
    llm = device_then_cloud([answer("a guess")], lambda key, response: "unsure")

    responses = await ask(llm)

    assert route(responses[0])["rejections"] == {"device": "unsure"}


async def test_a_call_cancelled_while_its_answer_is_judged_cancels_the_judge():
    never, cancelled = Announced(), []
    llm = device_then_cloud(["from device"], never_decides(cancelled, never))
    task = asyncio.create_task(ask(llm))
    await never.waited.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert (cancelled, llm.models["cloud"].calls) == (["device"], [])


async def test_a_plain_judge_running_past_the_deadline_is_not_interrupted_and_its_verdict_stands():
    def slow_judge(key, response):
        time.sleep(2 * TINY)  # The fault itself: a judge that blocks the event loop past the deadline.
        return True

    llm = device_then_cloud(["from device"], slow_judge, deadline=TINY)

    responses = await ask(llm)

    assert texts(responses) == ["from device"]


async def test_a_cancelled_call_raises_cancelled_error_though_its_judge_reports_it_as_an_error():
    never = Announced()

    async def judge(key, response):
        try:
            return await never.wait()
        except asyncio.CancelledError:
            raise ConnectionError("the judge's connection was aborted") from None

    llm = device_then_cloud(["from device"], judge)
    task = asyncio.create_task(ask(llm))
    await never.waited.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError) as raised:
        await task
    assert isinstance(raised.value.__cause__, ConnectionError)


async def test_the_deadline_cuts_a_judge_that_reports_its_cancellation_as_an_error():
    async def judge(key, response):
        try:
            return await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise ConnectionError("the judge's connection was aborted") from None

    llm = device_then_cloud(["from device"], judge, deadline=TINY)

    with pytest.raises(DeadlineExceeded):
        await ask(llm)


async def test_the_deadline_cuts_a_held_stream_that_reports_its_cancellation_as_an_error():
    llm = RoutedLlm(
        models={"device": Hanging(model="device", before=1, report_cancel_as=ConnectionError)},
        router=FallbackStrategy(["device"]),
        accept=lambda key, response: True,
        deadline=TINY,
    )

    with pytest.raises(DeadlineExceeded):
        await ask(llm, stream=True)

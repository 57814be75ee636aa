"""Error responses (``error_code`` set, no content) as a first response are failures before output."""

from __future__ import annotations

import pickle

import pytest
from google.adk.agents import LlmAgent
from google.adk.models.llm_response import LlmResponse
from google.genai import types

from routed_llm import HealthTracker, NoResponse, ResponseRejected, RoutedLlm, classify_error, is_transient
from routed_llm.strategies import FallbackStrategy
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, make_request, run_agent, texts
from tests.fake_servers import Chunks, FakeGemini, Finish, Text
from tests.test_provider_gemini import gemini, genai_transport  # noqa: F401 - autouse: the transport under test


def finished(reason: str) -> LlmResponse:
    """What ADK makes of a Gemini candidate with ``reason`` and no content."""
    return LlmResponse(error_code=reason, finish_reason=types.FinishReason(reason))


def blocked(reason: str) -> LlmResponse:
    """What ADK makes of a Gemini answer whose prompt was blocked."""
    return LlmResponse(error_code=reason, error_message="blocked")


def rejection(response: LlmResponse) -> ResponseRejected:
    return ResponseRejected("primary", response, "error response")


@pytest.mark.parametrize(
    "response",
    [finished(reason) for reason in ("SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY")]
    + [blocked(reason) for reason in ("SAFETY", "OTHER", "JAILBREAK", "MODEL_ARMOR")],
    ids=lambda response: f"{'finish' if response.finish_reason else 'blocked'}-{response.error_code}",
)
def test_a_refusal_is_a_request_failure(response):
    assert classify_error(rejection(response)) == "request"
    assert not is_transient(rejection(response))


@pytest.mark.parametrize(
    "response",
    [
        finished(reason)
        for reason in (
            "MALFORMED_FUNCTION_CALL",
            "OTHER",
            "RECITATION",
            "MAX_TOKENS",
            "FINISH_REASON_UNSPECIFIED",
        )
    ]
    + [LlmResponse(error_code="UNKNOWN_ERROR")],
    ids=lambda response: response.error_code,
)
def test_any_other_error_response_is_transient(response):
    assert classify_error(rejection(response)) == "transient"


def test_response_rejected_survives_pickling():
    error = ResponseRejected("primary", finished("OTHER"), "the model answered with the error OTHER")

    copy = pickle.loads(pickle.dumps(error))

    assert (type(copy), str(copy), copy.key, copy.response, copy.reason) == (
        ResponseRejected,
        str(error),
        error.key,
        error.response,
        error.reason,
    )


def test_no_response_is_transient_and_survives_pickling():
    error = NoResponse("primary")

    copy = pickle.loads(pickle.dumps(error))

    assert (type(copy), str(copy), copy.key) == (NoResponse, str(error), "primary")
    assert classify_error(copy) == "transient"


def primary_then_backup(primary_script, **options) -> RoutedLlm:
    return RoutedLlm(
        models={
            "primary": ScriptedLlm(model="p", script=primary_script),
            "backup": ScriptedLlm(model="b", script=lambda request: "from backup"),
        },
        router=FallbackStrategy(["primary", "backup"]),
        **options,
    )


async def test_an_error_response_fails_over_and_counts_against_the_key():
    health = HealthTracker(failure_threshold=1, clock=lambda: 0.0)
    llm = primary_then_backup([finished("OTHER")], health=health)

    responses = await collect(llm.generate_content_async(make_request()))

    assert texts(responses) == ["from backup"]
    assert health.state("primary") == "open"


async def test_a_refusal_is_output_unchanged_with_its_route_and_no_exception():
    refusal = finished("SAFETY")
    llm = primary_then_backup([refusal])

    responses = await collect(llm.generate_content_async(make_request()))

    assert responses[0].model_copy(update={"custom_metadata": None}) == refusal
    assert (
        responses[0].custom_metadata["routed_llm"]["rejected"] == "the model answered with the error SAFETY"
    )
    assert llm.models["backup"].calls == []


async def test_a_refusal_does_not_count_against_the_key():
    health = HealthTracker(failure_threshold=1, clock=lambda: 0.0)
    llm = primary_then_backup([blocked("SAFETY")], health=health)

    await collect(llm.generate_content_async(make_request()))

    assert health.state("primary") == "closed"


async def test_a_response_with_content_and_an_error_code_is_an_answer():
    truncated = LlmResponse(
        content=types.Content(role="model", parts=[types.Part(text="cut sh")]),
        error_code="MAX_TOKENS",
        finish_reason=types.FinishReason.MAX_TOKENS,
    )
    llm = primary_then_backup([truncated])

    responses = await collect(llm.generate_content_async(make_request()))

    assert (texts(responses), responses[0].error_code) == (["cut sh"], "MAX_TOKENS")


# The real Gemini client against a local fault server


@pytest.fixture
def server():
    fake = FakeGemini().start()
    yield fake
    fake.stop()


async def test_a_gemini_stream_closed_before_its_first_chunk_fails_over_to_the_backup(server):
    server.script("gemini-primary", Chunks(then="end-without-finish"))
    server.script("gemini-backup", Text("from backup"))
    llm = RoutedLlm(
        models={
            "primary": gemini(server.url, "gemini-primary"),
            "backup": gemini(server.url, "gemini-backup"),
        },
        router=FallbackStrategy(["primary", "backup"]),
    )

    responses = await collect(llm.generate_content_async(make_request(), stream=True))

    assert texts(responses)[-1] == "from backup"
    assert responses[-1].custom_metadata["routed_llm"]["errors"] == {"primary": "NoResponse"}


def unsure_device_then_gemini(server: FakeGemini) -> RoutedLlm:
    unsure = LlmResponse(content=types.Content(role="model", parts=[types.Part(text="Paris?")]))
    return RoutedLlm(
        models={
            "device": ScriptedLlm(model="device", script=[unsure]),
            "cloud": gemini(server.url, "gemini-cloud"),
        },
        router=FallbackStrategy(["device", "cloud"]),
        accept={"device": lambda key, response: "unsure"},
    )


async def test_an_agent_gets_the_unsure_answer_when_gemini_closes_its_stream_before_the_first_chunk(server):
    server.script("gemini-cloud", Chunks(then="end-without-finish"))
    agent = LlmAgent(name="assistant", model=unsure_device_then_gemini(server))

    _, stored = await run_agent(agent, "capital of France?", streaming=True)

    answer = stored[-1]
    assert (answer.author, texts([answer])) == ("assistant", ["Paris?"])
    assert answer.custom_metadata["routed_llm"]["errors"] == {
        "device": "ResponseRejected",
        "cloud": "NoResponse",
    }


async def test_an_agent_gets_geminis_refusal_rather_than_the_unsure_answer_before_it(server):
    server.script("gemini-cloud", Finish("SAFETY"))
    agent = LlmAgent(name="assistant", model=unsure_device_then_gemini(server))

    _, stored = await run_agent(agent, "something unsafe", streaming=True)

    answer = stored[-1]
    assert (answer.author, answer.error_code, answer.content) == ("assistant", "SAFETY", None)
    assert answer.custom_metadata["routed_llm"]["rejections"] == {
        "device": "unsure",
        "cloud": "the model answered with the error SAFETY",
    }

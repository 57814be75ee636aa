"""Error responses (``error_code`` set, no content) as a first response are failures before output."""

from __future__ import annotations

import pickle

import pytest
from google.adk.models.llm_response import LlmResponse
from google.genai import types

from routed_llm import HealthTracker, ResponseRejected, RoutedLlm, classify_error, is_transient
from routed_llm.strategies import FallbackStrategy
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, make_request, texts


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

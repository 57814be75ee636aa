"""What counts against a key's health: every row of the table in docs/error-policy.md.

An error caused by the request's content (a refusal, RECITATION, MAX_TOKENS,
MALFORMED_FUNCTION_CALL, ...) still goes to the router, which may fail over,
but says nothing about the provider: the key's circuit is left alone, here
and, with a store, on every replica.
"""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio
from google.adk.agents import LlmAgent
from google.adk.models.llm_response import LlmResponse
from google.genai import errors, types

from routed_llm import (
    BudgetExhausted,
    CircuitOpen,
    HealthTracker,
    ResponseRejected,
    RoutedLlm,
    counts_against_health,
    fall_back_across_providers,
)
from routed_llm.redis import RedisStore
from routed_llm.strategies import FallbackStrategy
from routed_llm.testing import ScriptedLlm
from tests.conftest import collect, make_request, run_agent, texts


def finished(reason: str) -> LlmResponse:
    """What ADK makes of a Gemini candidate with ``reason`` and no content."""
    return LlmResponse(error_code=reason, finish_reason=types.FinishReason(reason))


def blocked(reason: str) -> LlmResponse:
    """What ADK makes of a Gemini answer whose prompt was blocked."""
    return LlmResponse(error_code=reason, error_message="blocked")


def api_error(code: int, status: str) -> errors.APIError:
    error_type = errors.ServerError if code >= 500 else errors.ClientError
    return error_type(code, {"error": {"code": code, "message": status.lower(), "status": status}})


# The content's fault: these leave health alone. They fail over as the error policy says: the
# transient ones do; a refusal is a "request" failure, which no ready policy shops around.
CONTENT_TRANSIENT = {
    "RECITATION": finished("RECITATION"),
    "IMAGE_RECITATION": finished("IMAGE_RECITATION"),
    "MAX_TOKENS with no content": finished("MAX_TOKENS"),
    "MALFORMED_FUNCTION_CALL": finished("MALFORMED_FUNCTION_CALL"),
    "UNEXPECTED_TOOL_CALL": finished("UNEXPECTED_TOOL_CALL"),
    "TOO_MANY_TOOL_CALLS": finished("TOO_MANY_TOOL_CALLS"),
    "LANGUAGE": finished("LANGUAGE"),
}
REFUSALS = {
    "refusal SAFETY": finished("SAFETY"),
    "refusal PROHIBITED_CONTENT": finished("PROHIBITED_CONTENT"),
    "refusal BLOCKLIST": finished("BLOCKLIST"),
    "refusal SPII": finished("SPII"),
    "refusal IMAGE_SAFETY": finished("IMAGE_SAFETY"),
    "blocked prompt": blocked("OTHER"),
}
CONTENT = {**CONTENT_TRANSIENT, **REFUSALS}

# The provider's: these count against the key.
PROVIDER = {
    "OTHER": finished("OTHER"),
    "empty answer": finished("FINISH_REASON_UNSPECIFIED"),
    "UNKNOWN_ERROR": LlmResponse(error_code="UNKNOWN_ERROR"),
    "NO_IMAGE": finished("NO_IMAGE"),
    "503 UNAVAILABLE": api_error(503, "UNAVAILABLE"),
    "429 RESOURCE_EXHAUSTED": api_error(429, "RESOURCE_EXHAUSTED"),
    "timeout": TimeoutError("read timed out"),
    "401 UNAUTHENTICATED (provider)": api_error(401, "UNAUTHENTICATED"),
}


def routed(primary: ScriptedLlm, health: HealthTracker) -> RoutedLlm:
    return RoutedLlm(
        models={"primary": primary, "backup": ScriptedLlm(model="b", script=lambda request: "from backup")},
        router=FallbackStrategy(["primary", "backup"], is_transient=fall_back_across_providers),
        health=health,
    )


@pytest.mark.parametrize("failure", CONTENT.values(), ids=CONTENT.keys())
async def test_an_error_caused_by_the_content_leaves_the_keys_circuit_closed(failure):
    health = HealthTracker(failure_threshold=1, clock=lambda: 0.0)
    llm = routed(ScriptedLlm(model="p", script=lambda request: failure), health)

    for _ in range(3):
        await collect(llm.generate_content_async(make_request("the lyrics of a song, please")))

    assert health.state("primary") == "closed"


@pytest.mark.parametrize("failure", PROVIDER.values(), ids=PROVIDER.keys())
async def test_a_failure_of_the_provider_counts_against_the_key(failure):
    health = HealthTracker(failure_threshold=1, clock=lambda: 0.0)
    llm = routed(ScriptedLlm(model="p", script=lambda request: failure), health)

    await collect(llm.generate_content_async(make_request()))

    assert health.state("primary") == "open"


@pytest.mark.parametrize("failure", CONTENT_TRANSIENT.values(), ids=CONTENT_TRANSIENT.keys())
async def test_an_error_caused_by_the_content_still_fails_over(failure):
    health = HealthTracker(failure_threshold=1, clock=lambda: 0.0)
    llm = routed(ScriptedLlm(model="p", script=lambda request: failure), health)

    answer = texts(await collect(llm.generate_content_async(make_request())))

    assert answer == ["from backup"]


@pytest.mark.parametrize(
    "error",
    [
        BudgetExhausted("primary", 30.0),
        CircuitOpen("primary", 30.0),
        api_error(400, "INVALID_ARGUMENT"),
    ],
    ids=["BudgetExhausted", "CircuitOpen", "400 INVALID_ARGUMENT (request)"],
)
def test_our_own_refusals_and_a_bad_request_leave_the_keys_circuit_closed(error):
    health = HealthTracker(failure_threshold=1, clock=lambda: 0.0)

    health.record_failure(
        "primary", error, "transient" if not isinstance(error, errors.APIError) else "request"
    )

    assert health.state("primary") == "closed"


def test_counts_against_health_names_each_side_of_the_table():
    content = [ResponseRejected("primary", response, "error response") for response in CONTENT.values()]
    provider = [
        ResponseRejected("primary", failure, "error response")
        if isinstance(failure, LlmResponse)
        else failure
        for failure in PROVIDER.values()
    ]

    assert [counts_against_health(error) for error in content] == [False] * len(content)
    assert [counts_against_health(error) for error in provider] == [True] * len(provider)


async def test_three_recitations_through_adk_open_no_circuit_on_any_replica(redis_server):
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    clients = [redis.asyncio.Redis.from_url(redis_server.url) for _ in range(2)]
    try:
        stores = [RedisStore(client, namespace=namespace, timeout=5.0) for client in clients]
        agent = LlmAgent(
            name="assistant",
            model=routed(
                ScriptedLlm(model="p", script=lambda request: finished("RECITATION")),
                HealthTracker(failure_threshold=1, store=stores[0]),
            ),
        )
        replies = []
        for _ in range(3):
            events, _ = await run_agent(agent, "Sing me the lyrics of a famous song.")
            replies.append(
                [event.custom_metadata["routed_llm"]["key"] for event in events if event.custom_metadata]
            )
        elsewhere = HealthTracker(failure_threshold=1, store=stores[1])
        await elsewhere.refresh(["primary"])
    finally:
        for client in clients:
            await client.aclose()

    assert replies == [["backup"]] * 3  # Each failed over...
    assert elsewhere.state("primary") == "closed"  # ...and no replica holds it against the primary.

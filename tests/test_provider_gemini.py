"""Failover with the real Gemini client against a local fault-injecting server.

Runs under the google-genai HTTP transport named by ROUTED_LLM_GENAI_TRANSPORT
(httpx, the default, or aiohttp); nox runs the suite once under each.
"""

from __future__ import annotations

import os

import aiohttp
import httpx
import pytest
from google.adk.agents import LlmAgent
from google.adk.models import Gemini
from google.genai import Client, errors, types

from routed_llm import (
    ResponseRejected,
    RoutedLlm,
    StreamStalled,
    classify_error,
    fall_back_across_providers,
)
from routed_llm.strategies import FallbackStrategy
from tests.conftest import collect, get_weather, make_request, run_agent, texts
from tests.fake_servers import (
    BREAK,
    STALL,
    Blocked,
    Chunks,
    ClosedPort,
    Error,
    FakeGemini,
    Finish,
    FunctionCall,
    Hangup,
    Html,
    Slow,
    Stall,
    Text,
)

TRANSPORT = os.environ.get("ROUTED_LLM_GENAI_TRANSPORT", "httpx")
TIMEOUT_MS = 400


@pytest.fixture(autouse=True)
def genai_transport(monkeypatch):
    """Makes google-genai pick the transport under test, the way it decides itself."""
    import google.genai._api_client as api_client

    monkeypatch.setattr(api_client, "has_aiohttp", TRANSPORT == "aiohttp")
    monkeypatch.setenv("GOOGLE_API_KEY", "test-key")
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_GENAI_USE_VERTEXAI", raising=False)
    monkeypatch.delenv("GOOGLE_GENAI_USE_ENTERPRISE", raising=False)


@pytest.fixture
def server():
    fake = FakeGemini().start()
    yield fake
    fake.stop()


def gemini(base_url: str, name: str, *, timeout_ms: int | None = None) -> Gemini:
    """The real ADK Gemini model, one attempt per call, pointed at ``base_url``."""
    retry = types.HttpRetryOptions(attempts=1)
    if timeout_ms is None:
        return Gemini(model=name, base_url=base_url, retry_options=retry)
    options = types.HttpOptions(base_url=base_url, timeout=timeout_ms, retry_options=retry)
    return Gemini(model=name, client=Client(api_key="test-key", http_options=options))


def routed(primary: Gemini, backup: Gemini) -> RoutedLlm:
    return RoutedLlm(
        models={"primary": primary, "backup": backup}, router=FallbackStrategy(["primary", "backup"])
    )


def pair(server: FakeGemini, **kwargs) -> RoutedLlm:
    return routed(
        gemini(server.url, "gemini-primary", **kwargs), gemini(server.url, "gemini-backup", **kwargs)
    )


TRANSIENT_FAULTS = {
    "429 RESOURCE_EXHAUSTED": Error(429, "RESOURCE_EXHAUSTED"),
    "500 INTERNAL": Error(500, "INTERNAL"),
    "503 UNAVAILABLE": Error(503, "UNAVAILABLE"),
    "HTML 503": Html(503),
    "hang-up before any byte": Hangup(),
}
PERMANENT_FAULTS = {
    "400 INVALID_ARGUMENT": Error(400, "INVALID_ARGUMENT"),
    "401 UNAUTHENTICATED": Error(401, "UNAUTHENTICATED"),
    "403 PERMISSION_DENIED": Error(403, "PERMISSION_DENIED"),
    "404 NOT_FOUND": Error(404, "NOT_FOUND"),
}
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["plain", "sse"])


def test_the_selected_transport_is_the_one_in_use(server):
    client = gemini(server.url, "gemini-primary").api_client

    assert client._api_client._use_aiohttp() is (TRANSPORT == "aiohttp")


@STREAM
@pytest.mark.parametrize("fault", TRANSIENT_FAULTS.values(), ids=TRANSIENT_FAULTS.keys())
async def test_transient_fault_fails_over_to_the_backup(server, fault, stream):
    server.script("gemini-primary", fault)
    server.script("gemini-backup", Text("from backup"))

    responses = await collect(pair(server).generate_content_async(make_request(), stream=stream))

    assert texts(responses)[-1] == "from backup"
    assert responses[-1].custom_metadata["routed_llm"]["failed_keys"] == ["primary"]
    assert [len(server.calls_to(m)) for m in ("gemini-primary", "gemini-backup")] == [1, 1]


@STREAM
@pytest.mark.parametrize("fault", PERMANENT_FAULTS.values(), ids=PERMANENT_FAULTS.keys())
async def test_permanent_fault_propagates_the_clients_own_error(server, fault, stream):
    server.script("gemini-primary", fault)

    with pytest.raises(errors.ClientError) as raised:
        await collect(pair(server).generate_content_async(make_request(), stream=stream))

    assert (raised.value.code, raised.value.status) == (fault.code, fault.status)
    assert server.calls_to("gemini-backup") == []


GEMINI_OVERFLOW = Error(
    400,
    "INVALID_ARGUMENT",
    "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
)


@STREAM
async def test_context_window_overflow_falls_back_to_the_larger_model(server, stream):
    server.script("gemini-primary", GEMINI_OVERFLOW)
    server.script("gemini-backup", Text("from the long-context model"))

    responses = await collect(pair(server).generate_content_async(make_request(), stream=stream))

    assert texts(responses)[-1] == "from the long-context model"


PROVIDER_FAULTS = {
    "400 API_KEY_INVALID": Error(
        400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"
    ),
    "401 UNAUTHENTICATED": Error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
    "403 SERVICE_DISABLED": Error(
        403, "PERMISSION_DENIED", "Generative Language API is disabled.", reason="SERVICE_DISABLED"
    ),
    "400 unsupported location": Error(
        400, "FAILED_PRECONDITION", "User location is not supported for the API use."
    ),
    "404 retired model": Error(
        404, "NOT_FOUND", "models/gemini-primary is not found for API version v1beta."
    ),
}


@STREAM
@pytest.mark.parametrize("fault", PROVIDER_FAULTS.values(), ids=PROVIDER_FAULTS.keys())
async def test_provider_fault_falls_back_to_another_provider_with_the_cross_provider_policy(
    server, fault, stream
):
    server.script("gemini-primary", fault)
    server.script("gemini-backup", Text("from the other provider"))
    llm = RoutedLlm(
        models={
            "primary": gemini(server.url, "gemini-primary"),
            "backup": gemini(server.url, "gemini-backup"),
        },
        router=FallbackStrategy(["primary", "backup"], is_transient=fall_back_across_providers),
    )

    responses = await collect(llm.generate_content_async(make_request(), stream=stream))

    assert texts(responses)[-1] == "from the other provider"
    assert responses[-1].custom_metadata["routed_llm"]["failed_keys"] == ["primary"]


@STREAM
@pytest.mark.parametrize("fault", PROVIDER_FAULTS.values(), ids=PROVIDER_FAULTS.keys())
async def test_provider_fault_propagates_under_the_default_policy(server, fault, stream):
    server.script("gemini-primary", fault)

    with pytest.raises(errors.ClientError) as raised:
        await collect(pair(server).generate_content_async(make_request(), stream=stream))

    assert classify_error(raised.value) == "provider"
    assert server.calls_to("gemini-backup") == []


@STREAM
async def test_malformed_request_propagates_even_with_the_cross_provider_policy(server, stream):
    server.script("gemini-primary", Error(400, "INVALID_ARGUMENT", "Invalid value at 'contents[0]'."))
    llm = RoutedLlm(
        models={
            "primary": gemini(server.url, "gemini-primary"),
            "backup": gemini(server.url, "gemini-backup"),
        },
        router=FallbackStrategy(["primary", "backup"], is_transient=fall_back_across_providers),
    )

    with pytest.raises(errors.ClientError):
        await collect(llm.generate_content_async(make_request(), stream=stream))

    assert server.calls_to("gemini-backup") == []


@STREAM
async def test_stalled_server_times_out_and_fails_over(server, stream):
    server.script("gemini-primary", Stall())
    server.script("gemini-backup", Text("from backup"))

    responses = await collect(
        pair(server, timeout_ms=TIMEOUT_MS).generate_content_async(make_request(), stream=stream)
    )

    assert texts(responses)[-1] == "from backup"


@STREAM
async def test_stalled_server_costs_one_attempt_under_first_response_timeout(server, stream):
    server.script("gemini-primary", Stall())
    server.script("gemini-backup", Text("from backup"))
    llm = RoutedLlm(
        models={
            "primary": gemini(server.url, "gemini-primary"),
            "backup": gemini(server.url, "gemini-backup"),
        },
        router=FallbackStrategy(["primary", "backup"]),
        first_response_timeout={"primary": 0.2},  # The backup answers however loaded the machine is.
    )

    responses = await collect(llm.generate_content_async(make_request(), stream=stream))

    assert texts(responses)[-1] == "from backup"
    assert responses[-1].custom_metadata["routed_llm"]["errors"] == {"primary": "AttemptTimeout"}


async def test_stream_stalled_after_its_first_chunk_is_cut_by_idle_timeout(server):
    server.script("gemini-primary", Chunks("first ", then=STALL))
    llm = RoutedLlm(
        models={
            "primary": gemini(server.url, "gemini-primary"),
            "backup": gemini(server.url, "gemini-backup"),
        },
        router=FallbackStrategy(["primary", "backup"]),
        idle_timeout=0.2,
    )
    received = []

    async def consume():
        async for response in llm.generate_content_async(make_request(), stream=True):
            received.append(response)

    with pytest.raises(StreamStalled):
        await consume()

    assert texts(received) == ["first "]
    assert server.calls_to("gemini-backup") == []


async def test_slow_but_healthy_server_answers_without_failover(server):
    server.script("gemini-primary", Slow(Text("late but fine"), seconds=0.05))

    responses = await collect(pair(server, timeout_ms=5_000).generate_content_async(make_request()))

    assert texts(responses) == ["late but fine"]
    assert server.calls_to("gemini-backup") == []


@STREAM
async def test_connection_refused_fails_over(server, stream):
    llm = routed(gemini(ClosedPort().url, "gemini-primary"), gemini(server.url, "gemini-backup"))
    server.script("gemini-backup", Text("from backup"))

    responses = await collect(llm.generate_content_async(make_request(), stream=stream))

    assert texts(responses)[-1] == "from backup"


# What the client raises, by transport, when a stream breaks after its first chunk.
CUT_STREAM_ERROR = {"httpx": httpx.RemoteProtocolError, "aiohttp": aiohttp.ClientPayloadError}[TRANSPORT]
STALLED_STREAM_ERROR = {"httpx": httpx.ReadTimeout, "aiohttp": TimeoutError}[TRANSPORT]
STREAM_BREAKS = {
    "connection cut": (Chunks("first ", then=BREAK), CUT_STREAM_ERROR),
    "in-stream error object": (Chunks("first ", then=Error(503, "UNAVAILABLE")), errors.ServerError),
}


@pytest.mark.parametrize(("fault", "expected"), STREAM_BREAKS.values(), ids=STREAM_BREAKS.keys())
async def test_fault_after_the_first_streamed_chunk_propagates(server, fault, expected):
    server.script("gemini-primary", fault)
    received = []

    async def consume():
        async for response in pair(server).generate_content_async(make_request(), stream=True):
            received.append(response)

    with pytest.raises(expected):
        await consume()

    assert texts(received) == ["first "]
    assert server.calls_to("gemini-backup") == []


async def test_stream_that_stalls_after_the_first_chunk_propagates_a_timeout(server):
    server.script("gemini-primary", Chunks("first ", then=STALL))
    received = []

    async def consume():
        llm = pair(server, timeout_ms=TIMEOUT_MS)
        async for response in llm.generate_content_async(make_request(), stream=True):
            received.append(response)

    with pytest.raises(STALLED_STREAM_ERROR):
        await consume()

    assert texts(received) == ["first "]
    assert server.calls_to("gemini-backup") == []


async def test_stream_ending_early_without_error_yields_no_finish_reason(server):
    server.script("gemini-primary", Chunks("only part", then="end-without-finish"))

    responses = await collect(pair(server).generate_content_async(make_request(), stream=True))

    assert responses[-1].finish_reason is None
    assert server.calls_to("gemini-backup") == []


async def test_each_attempt_sends_its_own_model_name_in_the_url(server):
    server.script("gemini-primary", Error(503, "UNAVAILABLE"))
    server.script("gemini-backup", Text("ok"))

    await collect(pair(server).generate_content_async(make_request()))

    assert [request.path.split("/models/")[1].split(":")[0] for request in server.requests] == [
        "gemini-primary",
        "gemini-backup",
    ]


async def test_backup_receives_the_same_contents_the_primary_was_sent(server):
    server.script("gemini-primary", Error(500, "INTERNAL"))
    server.script("gemini-backup", Text("ok"))

    await collect(pair(server).generate_content_async(make_request("question", "answer", "follow-up")))

    primary, backup = server.requests
    assert primary.body["contents"] == backup.body["contents"]


async def test_agent_with_tool_fails_over_on_every_model_step_while_streaming(server):
    server.script("gemini-primary", Error(503, "UNAVAILABLE"), Error(503, "UNAVAILABLE"))
    server.script(
        "gemini-backup", FunctionCall("get_weather", {"city": "Paris"}), Chunks("It is ", "sunny in Paris.")
    )
    agent = LlmAgent(name="assistant", model=pair(server), tools=[get_weather])

    _, stored = await run_agent(agent, "weather in Paris?", streaming=True)

    answers = [event for event in stored if event.author == "assistant"]
    assert [event.custom_metadata["routed_llm"]["key"] for event in answers if event.custom_metadata] == [
        "backup",
        "backup",
    ]
    assert answers[-1].content.parts[0].text == "It is sunny in Paris."
    tool_result = server.calls_to("gemini-backup")[1].body["contents"][-1]["parts"][0]["functionResponse"]
    assert tool_result["response"] == {"forecast": "sunny in Paris"}


# HTTP 200 answers that ADK turns into error responses (error_code set, no content).
TRANSIENT_ERROR_ANSWERS = {
    "MALFORMED_FUNCTION_CALL": Finish("MALFORMED_FUNCTION_CALL", "Malformed function call: get_weather("),
    "OTHER": Finish("OTHER"),
    "RECITATION": Finish("RECITATION"),
    "MAX_TOKENS with no content": Finish("MAX_TOKENS"),
    "LANGUAGE": Finish("LANGUAGE"),
    "UNEXPECTED_TOOL_CALL": Finish("UNEXPECTED_TOOL_CALL"),
    "empty (FINISH_REASON_UNSPECIFIED)": Finish("FINISH_REASON_UNSPECIFIED"),
}
REFUSING_ERROR_ANSWERS = {
    "SAFETY": Finish("SAFETY"),
    "PROHIBITED_CONTENT": Finish("PROHIBITED_CONTENT"),
    "BLOCKLIST": Finish("BLOCKLIST"),
    "SPII": Finish("SPII"),
    "IMAGE_SAFETY": Finish("IMAGE_SAFETY"),
    "blocked prompt SAFETY": Blocked("SAFETY"),
    "blocked prompt OTHER": Blocked("OTHER"),
    "blocked prompt PROHIBITED_CONTENT": Blocked("PROHIBITED_CONTENT"),
}


def without_route(responses):
    """The responses as the model gave them: the route record taken off."""
    return [response.model_copy(update={"custom_metadata": None}) for response in responses]


@STREAM
@pytest.mark.parametrize("answer", TRANSIENT_ERROR_ANSWERS.values(), ids=TRANSIENT_ERROR_ANSWERS.keys())
async def test_error_response_fails_over_to_the_backup(server, answer, stream):
    server.script("gemini-primary", answer)
    server.script("gemini-backup", Text("from backup"))

    responses = await collect(pair(server).generate_content_async(make_request(), stream=stream))

    assert texts(responses)[-1] == "from backup"
    assert responses[-1].custom_metadata["routed_llm"]["errors"] == {"primary": "ResponseRejected"}


@STREAM
@pytest.mark.parametrize("answer", TRANSIENT_ERROR_ANSWERS.values(), ids=TRANSIENT_ERROR_ANSWERS.keys())
async def test_the_router_is_told_the_error_responses_code(server, answer, stream):
    server.script("gemini-primary", answer)
    server.script("gemini-backup", Text("from backup"))
    seen = []

    def router(models, llm_request, error_context):
        seen.append(error_context)
        return "primary" if error_context is None else "backup"

    llm = RoutedLlm(
        models={
            "primary": gemini(server.url, "gemini-primary"),
            "backup": gemini(server.url, "gemini-backup"),
        },
        router=router,
    )

    await collect(llm.generate_content_async(make_request(), stream=stream))

    rejected = seen[1].last_error
    assert isinstance(rejected, ResponseRejected)
    assert (rejected.key, rejected.response.error_code) == ("primary", answer.reason)


@STREAM
@pytest.mark.parametrize("answer", REFUSING_ERROR_ANSWERS.values(), ids=REFUSING_ERROR_ANSWERS.keys())
async def test_refusal_is_not_shopped_around_and_reaches_adk_unchanged(server, answer, stream):
    server.script("gemini-primary", answer, answer)
    direct = make_request()
    direct.model = "gemini-primary"
    bare = await collect(gemini(server.url, "gemini-primary").generate_content_async(direct, stream))

    responses = await collect(pair(server).generate_content_async(make_request(), stream=stream))

    assert without_route(responses) == bare
    assert responses[-1].error_code == answer.reason
    assert server.calls_to("gemini-backup") == []


@STREAM
async def test_error_response_yielded_when_no_model_serves_records_its_rejection(server, stream):
    server.script("gemini-primary", Finish("OTHER"))
    server.script("gemini-backup", Error(503, "UNAVAILABLE"))

    responses = await collect(pair(server).generate_content_async(make_request(), stream=stream))

    route = responses[-1].custom_metadata["routed_llm"]
    assert responses[-1].error_code == "OTHER"
    assert (route["key"], route["failed_keys"], route["attempts"]) == ("primary", ["primary", "backup"], 2)
    assert route["rejected"].startswith("the model answered with the error OTHER")


async def test_agent_is_answered_by_the_backup_after_a_malformed_function_call(server):
    server.script("gemini-primary", Finish("MALFORMED_FUNCTION_CALL"))
    server.script("gemini-backup", Text("It is sunny in Paris."))
    agent = LlmAgent(name="assistant", model=pair(server), tools=[get_weather])

    _, stored = await run_agent(agent, "weather in Paris?")

    answer = stored[-1]
    assert (answer.error_code, answer.content.parts[0].text) == (None, "It is sunny in Paris.")
    assert answer.custom_metadata["routed_llm"]["failed_keys"] == ["primary"]

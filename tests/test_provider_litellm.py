"""Failover with ADK's LiteLlm wrapper against a local OpenAI-compatible server.

Needs the ``litellm`` extra, which nox installs for every test session.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # Never fetch the cost map.

import httpx
import pytest

litellm = pytest.importorskip("litellm", reason="install the 'litellm' extra (nox does)")

from google.adk.agents import LlmAgent  # noqa: E402
from google.adk.models.lite_llm import LiteLlm  # noqa: E402

from routed_llm import RoutedLlm, classify_error, is_transient  # noqa: E402
from routed_llm.strategies import FallbackStrategy  # noqa: E402
from tests.conftest import collect, get_weather, make_request, run_agent, texts  # noqa: E402
from tests.fake_servers import (  # noqa: E402
    BREAK,
    STALL,
    Chunks,
    ClosedPort,
    Error,
    FakeOpenAI,
    FunctionCall,
    Hangup,
    Html,
    Stall,
    Text,
)


@pytest.fixture
def server():
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


def lite(base_url: str, name: str, *, timeout: float = 5.0) -> LiteLlm:
    """ADK's real LiteLlm wrapper, SDK retries off, pointed at ``base_url``."""
    return LiteLlm(
        model=f"openai/{name}", api_base=f"{base_url}/v1", api_key="sk-test", max_retries=0, timeout=timeout
    )


def pair(primary_url: str, backup_url: str, **kwargs) -> RoutedLlm:
    return RoutedLlm(
        models={
            "primary": lite(primary_url, "gpt-primary", **kwargs),
            "backup": lite(backup_url, "gpt-backup"),
        },
        router=FallbackStrategy(["primary", "backup"]),
    )


TRANSIENT_FAULTS = {
    "429": (Error(429, "rate_limit_exceeded"), "RateLimitError"),
    "500": (Error(500, "server_error"), "InternalServerError"),
    "503": (Error(503, "overloaded"), "ServiceUnavailableError"),
    "HTML 503": (Html(503), "ServiceUnavailableError"),
    "hang-up before any byte": (Hangup(), "InternalServerError"),
}
PERMANENT_FAULTS = {
    "400": (Error(400, "invalid_request_error"), "BadRequestError"),
    "401": (Error(401, "invalid_api_key"), "AuthenticationError"),
    "403": (Error(403, "permission_denied"), "APIError"),  # LiteLLM maps no PermissionDeniedError here.
    "404": (Error(404, "model_not_found"), "NotFoundError"),
}
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["plain", "sse"])


@STREAM
@pytest.mark.parametrize(("fault", "error_name"), TRANSIENT_FAULTS.values(), ids=TRANSIENT_FAULTS.keys())
async def test_transient_fault_fails_over_to_the_backup(server, fault, error_name, stream):
    server.script("gpt-primary", fault)
    server.script("gpt-backup", Text("from backup"))

    responses = await collect(
        pair(server.url, server.url).generate_content_async(make_request(), stream=stream)
    )

    assert texts(responses)[-1] == "from backup"
    assert responses[-1].custom_metadata["routed_llm"]["errors"] == {"primary": error_name}


@STREAM
@pytest.mark.parametrize(("fault", "error_name"), PERMANENT_FAULTS.values(), ids=PERMANENT_FAULTS.keys())
async def test_permanent_fault_propagates_the_clients_own_error(server, fault, error_name, stream):
    server.script("gpt-primary", fault)

    with pytest.raises(getattr(litellm.exceptions, error_name)) as raised:
        await collect(pair(server.url, server.url).generate_content_async(make_request(), stream=stream))

    assert raised.value.status_code == fault.code
    assert server.calls_to("gpt-backup") == []


@STREAM
async def test_connection_refused_fails_over(server, stream):
    server.script("gpt-backup", Text("from backup"))

    responses = await collect(
        pair(ClosedPort().url, server.url).generate_content_async(make_request(), stream=stream)
    )

    assert texts(responses)[-1] == "from backup"


@STREAM
async def test_stalled_server_times_out_and_fails_over(server, stream):
    server.script("gpt-primary", Stall())
    server.script("gpt-backup", Text("from backup"))

    llm = pair(server.url, server.url, timeout=0.4)
    responses = await collect(llm.generate_content_async(make_request(), stream=stream))

    assert texts(responses)[-1] == "from backup"
    assert responses[-1].custom_metadata["routed_llm"]["errors"] == {"primary": "Timeout"}


STREAM_BREAKS = {
    "connection cut": Chunks("first ", then=BREAK),
    "in-stream error object": Chunks("first ", then=Error(503, "overloaded")),
    "stall": Chunks("first ", then=STALL),
}


@pytest.mark.parametrize("fault", STREAM_BREAKS.values(), ids=STREAM_BREAKS.keys())
async def test_fault_after_the_first_streamed_chunk_propagates(server, fault):
    server.script("gpt-primary", fault)
    received = []

    async def consume():
        async for response in pair(server.url, server.url, timeout=0.4).generate_content_async(
            make_request(), stream=True
        ):
            received.append(response)

    with pytest.raises(litellm.exceptions.MidStreamFallbackError):  # LiteLLM's name for every one of them.
        await consume()

    assert texts(received)[:1] == ["first "]
    assert server.calls_to("gpt-backup") == []


async def test_each_attempt_sends_its_own_model_name(server):
    server.script("gpt-primary", Error(503, "overloaded"))
    server.script("gpt-backup", Text("ok"))

    await collect(pair(server.url, server.url).generate_content_async(make_request()))

    assert [request.body["model"] for request in server.requests] == ["gpt-primary", "gpt-backup"]


async def test_agent_with_tool_fails_over_on_every_model_step_while_streaming(server):
    server.script("gpt-primary", Error(503, "overloaded"), Error(503, "overloaded"))
    server.script(
        "gpt-backup", FunctionCall("get_weather", {"city": "Paris"}), Chunks("It is ", "sunny in Paris.")
    )
    agent = LlmAgent(name="assistant", model=pair(server.url, server.url), tools=[get_weather])

    _, stored = await run_agent(agent, "weather in Paris?", streaming=True)

    keys = [
        e.custom_metadata["routed_llm"]["key"]
        for e in stored
        if e.author == "assistant" and e.custom_metadata
    ]
    assert keys == ["backup", "backup"]
    assert [e for e in stored if e.author == "assistant"][-1].content.parts[0].text == "It is sunny in Paris."


def litellm_error(name: str, **extra):
    return getattr(litellm.exceptions, name)(
        message="scripted", llm_provider="openai", model="gpt-x", **extra
    )


LITELLM_SHAPES = {
    "RateLimitError (429)": (lambda: litellm_error("RateLimitError"), True),
    "InternalServerError (500)": (lambda: litellm_error("InternalServerError"), True),
    "ServiceUnavailableError (503)": (lambda: litellm_error("ServiceUnavailableError"), True),
    "Timeout (408)": (lambda: litellm_error("Timeout"), True),
    "APIConnectionError (misreported 500: refused or hang-up)": (
        lambda: litellm_error("APIConnectionError"),
        True,
    ),
    "ContextWindowExceededError (400, a larger model may fit)": (
        lambda: litellm_error("ContextWindowExceededError"),
        True,
    ),
    "BadRequestError (400)": (lambda: litellm_error("BadRequestError"), False),
    "AuthenticationError (401)": (lambda: litellm_error("AuthenticationError"), False),
    "NotFoundError (404)": (lambda: litellm_error("NotFoundError"), False),
    "APIError 403": (lambda: litellm_error("APIError", status_code=403), False),
}


@pytest.mark.parametrize(("build", "transient"), LITELLM_SHAPES.values(), ids=LITELLM_SHAPES.keys())
def test_is_transient_classifies_each_litellm_exception(build, transient):
    assert is_transient(build()) is transient


LITELLM_CLASSES = {
    "RateLimitError (429)": (lambda: litellm_error("RateLimitError"), "transient"),
    "ContextWindowExceededError": (lambda: litellm_error("ContextWindowExceededError"), "transient"),
    "AuthenticationError (401)": (lambda: litellm_error("AuthenticationError"), "provider"),
    "PermissionDeniedError (403)": (
        lambda: litellm.exceptions.PermissionDeniedError(
            message="scripted",
            llm_provider="openai",
            model="gpt-x",
            response=httpx.Response(403, request=httpx.Request("POST", "http://127.0.0.1/v1")),
        ),
        "provider",
    ),
    "APIError 403 (how LiteLLM reports an OpenAI 403)": (
        lambda: litellm_error("APIError", status_code=403),
        "provider",
    ),
    "NotFoundError (404, a retired model)": (lambda: litellm_error("NotFoundError"), "provider"),
    "BadRequestError carrying Gemini's invalid-key body": (
        lambda: litellm.exceptions.BadRequestError(
            message='GeminiException - {"error": {"code": 400, "message": "API key not valid. Please pass '
            'a valid API key.", "status": "INVALID_ARGUMENT"}}',
            llm_provider="gemini",
            model="gemini-x",
        ),
        "provider",
    ),
    "BadRequestError (400)": (lambda: litellm_error("BadRequestError"), "request"),
}


@pytest.mark.parametrize(("build", "expected"), LITELLM_CLASSES.values(), ids=LITELLM_CLASSES.keys())
def test_classify_error_classifies_each_litellm_exception(build, expected):
    assert classify_error(build()) == expected

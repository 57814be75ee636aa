"""RoutedLlm inside a real ADK agent, run by ADK's InMemoryRunner."""

from __future__ import annotations

import pytest
from google.adk.agents import LlmAgent
from google.adk.events import Event
from google.genai import types

from routed_llm import RoutedLlm
from routed_llm.testing import ScriptedLlm, Stream
from tests.conftest import run_agent


def primary_then_fallback(models, llm_request, error_context):
    if error_context is None:
        return "primary"
    return None if "fallback" in error_context.failed_keys else "fallback"


def final_text(events: list[Event]) -> str:
    finals = [
        e for e in events if e.content and e.content.parts and e.content.parts[0].text and not e.partial
    ]
    return finals[-1].content.parts[0].text


async def test_agent_answers_through_the_routed_model():
    llm = RoutedLlm(
        models={
            "primary": ScriptedLlm(model="p", script=["Hello from primary"]),
            "fallback": ScriptedLlm(model="f"),
        },
        router=primary_then_fallback,
    )

    events, _ = await run_agent(LlmAgent(name="assistant", model=llm), "hi")

    assert final_text(events) == "Hello from primary"


async def test_tool_round_trip_runs_through_the_routed_model():
    calls: list[str] = []

    def get_weather(city: str) -> dict[str, str]:
        """Returns the weather for a city."""
        calls.append(city)
        return {"forecast": "sunny"}

    primary = ScriptedLlm(
        model="p",
        script=[
            types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"})),
            "It is sunny in Paris.",
        ],
    )
    llm = RoutedLlm(
        models={"primary": primary, "fallback": ScriptedLlm(model="f")}, router=primary_then_fallback
    )

    events, _ = await run_agent(LlmAgent(name="assistant", model=llm, tools=[get_weather]), "weather?")

    assert calls == ["Paris"]
    assert final_text(events) == "It is sunny in Paris."
    second_request = primary.calls[1]
    assert second_request.contents[-1].parts[0].function_response.response == {"forecast": "sunny"}
    assert second_request.tool_names == ("get_weather",)


async def test_sse_streaming_passes_partial_chunks_to_the_runner():
    llm = RoutedLlm(
        models={
            "primary": ScriptedLlm(model="p", script=[Stream(["Hel", "lo"])]),
            "fallback": ScriptedLlm(model="f"),
        },
        router=primary_then_fallback,
    )

    events, _ = await run_agent(LlmAgent(name="assistant", model=llm), "hi", streaming=True)

    partials = [e.content.parts[0].text for e in events if e.partial]
    assert partials == ["Hel", "lo"]
    assert final_text(events) == "Hello"


async def test_failover_is_visible_in_stored_session_events():
    llm = RoutedLlm(
        models={
            "primary": ScriptedLlm(model="model-p", script=[ConnectionError("outage")]),
            "fallback": ScriptedLlm(model="model-f", script=["Hello from fallback"]),
        },
        router=primary_then_fallback,
    )

    _, stored = await run_agent(LlmAgent(name="assistant", model=llm), "hi")

    [answer] = [e for e in stored if e.author == "assistant"]
    assert answer.content.parts[0].text == "Hello from fallback"
    assert answer.custom_metadata["routed_llm"] == {
        "key": "fallback",
        "model": "model-f",
        "failed_keys": ["primary"],
        "errors": {"primary": "ConnectionError"},
        "attempts": 2,
    }


async def test_error_after_first_chunk_reaches_on_model_error_callback():
    seen_errors: list[Exception] = []
    error = ConnectionError("stream broke mid-way")

    def on_model_error(callback_context, llm_request, error):
        seen_errors.append(error)
        return None  # Let ADK raise it as usual.

    fallback = ScriptedLlm(model="f", script=["never"])
    llm = RoutedLlm(
        models={
            "primary": ScriptedLlm(model="p", script=[Stream(["par"], error=error)]),
            "fallback": fallback,
        },
        router=primary_then_fallback,
    )
    agent = LlmAgent(name="assistant", model=llm, on_model_error_callback=on_model_error)

    with pytest.raises(ConnectionError) as raised:
        await run_agent(agent, "hi", streaming=True)

    assert raised.value is error
    assert seen_errors == [error]
    assert fallback.calls == []

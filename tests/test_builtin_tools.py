"""ADK's Gemini built-in tools on an agent whose model is a RoutedLlm.

Real runners, the real ``google.adk.models.Gemini`` client and the fake
Gemini server, under the google-genai transport named by
ROUTED_LLM_GENAI_TRANSPORT.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.adk.agents import LlmAgent
from google.adk.code_executors import BuiltInCodeExecutor
from google.adk.tools import google_search, url_context

from routed_llm import HealthTracker, RoutedLlm, RoutingError
from routed_llm.strategies import FallbackStrategy
from routed_llm.testing import ScriptedLlm
from tests.conftest import in_order, run_agent, texts
from tests.fake_servers import FakeGemini, Text
from tests.test_provider_gemini import gemini, genai_transport  # noqa: F401 - an autouse fixture.

FLASH = "gemini-2.5-flash"
PRO = "gemini-2.5-pro"

# Each tool, how an agent takes it, and what the request carries for it (the wire's name).
TOOLS = {
    "google_search": ({"tools": [google_search]}, "googleSearch"),
    "url_context": ({"tools": [url_context]}, "urlContext"),
    "code_execution": ({"code_executor": BuiltInCodeExecutor()}, "codeExecution"),
}


@pytest.fixture
def server():
    fake = FakeGemini().start()
    yield fake
    fake.stop()


def agent_with(tool: str, routed: RoutedLlm) -> LlmAgent:
    arguments: dict[str, Any] = TOOLS[tool][0]
    return LlmAgent(name="assistant", model=routed, **arguments)


def sent_tools(server: FakeGemini, model: str) -> list[str]:
    return [name for tool in server.calls_to(model)[0].body.get("tools", []) for name in tool]


@pytest.mark.parametrize("tool", TOOLS)
async def test_a_builtin_tool_works_when_every_key_is_a_gemini_model(server, tool):
    server.script(FLASH, Text("Found it."))
    routed = RoutedLlm(
        models={"flash": gemini(server.url, FLASH), "pro": gemini(server.url, PRO)},
        router=FallbackStrategy(["flash", "pro"]),
    )

    events, _ = await run_agent(agent_with(tool, routed), "Look it up.")

    assert texts(events) == ["Found it."]
    assert sent_tools(server, FLASH) == [TOOLS[tool][1]]


@pytest.mark.parametrize("tool", TOOLS)
async def test_strategies_skip_a_key_that_is_not_gemini_for_a_builtin_tool_and_say_why(server, tool):
    server.script(FLASH, Text("Found it."))
    local = ScriptedLlm(model="local-model", script=["Never asked."])
    routed = RoutedLlm(
        models={"local": local, "cloud": gemini(server.url, FLASH)},
        router=FallbackStrategy(["local", "cloud"]),
    )

    events, _ = await run_agent(agent_with(tool, routed), "Look it up.")

    assert texts(events) == ["Found it."]
    assert local.calls == []
    record = events[-1].custom_metadata["routed_llm"]
    assert record["key"] == "cloud"
    assert list(record["skipped"]) == ["local"]
    assert tool in record["skipped"]["local"]


async def test_a_plain_router_that_picks_a_key_lacking_the_tool_gets_a_routing_error_before_sending(server):
    local = ScriptedLlm(model="local-model", script=["Never asked."])
    routed = RoutedLlm(
        models={"local": local, "cloud": gemini(server.url, FLASH)}, router=in_order(["local", "cloud"])
    )

    with pytest.raises(RoutingError, match="google_search") as raised:
        await run_agent(agent_with("google_search", routed), "Look it up.")

    assert raised.value.key == "local"
    assert "'local'" in str(raised.value)
    assert local.calls == []
    assert server.requests == []


async def test_the_soonest_available_last_resort_is_never_a_key_lacking_the_tool(server):
    server.script(FLASH, Text("Found it."))
    health = HealthTracker(failure_threshold=1, cooldown=30.0, clock=lambda: 0.0)
    health.record_failure("cloud", ConnectionError("down"), "transient")
    local = ScriptedLlm(model="local-model", script=["Never asked."])
    routed = RoutedLlm(
        models={"local": local, "cloud": gemini(server.url, FLASH)},
        router=FallbackStrategy(["local", "cloud"]),
        health=health,
    )

    events, _ = await run_agent(agent_with("google_search", routed), "Look it up.")

    assert texts(events) == ["Found it."]
    assert local.calls == []

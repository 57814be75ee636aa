"""StickyPerInvocation keeps one model for a whole tool loop."""

from __future__ import annotations

import itertools

import pytest
from google.adk.agents import LlmAgent
from google.genai import types

from routed_llm import InvocationInfo, RoutedLlm, RoutingPlugin, invocation_scope
from routed_llm.strategies import FallbackStrategy, PreRoutingStrategy, StickyPerInvocation
from routed_llm.testing import ScriptedLlm
from tests.conftest import get_weather, make_request, make_runner, run_agent

CALL_TOOL = types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"}))


def alternating() -> PreRoutingStrategy:
    """A strategy that would switch models on every call."""
    keys = itertools.cycle(["a", "b"])
    return PreRoutingStrategy(lambda ctx: next(keys))


def tool_then_answer(model: str) -> ScriptedLlm:
    return ScriptedLlm(model=model, script=[CALL_TOOL, "done", CALL_TOOL, "done"])


async def test_every_model_call_of_an_invocation_keeps_the_first_key():
    a, b = tool_then_answer("a"), tool_then_answer("b")
    llm = RoutedLlm(models=[a, b], router=StickyPerInvocation(alternating()))
    agent = LlmAgent(name="assistant", model=llm, tools=[get_weather])

    await run_agent(agent, "weather?", plugins=[RoutingPlugin()])

    assert (len(a.calls), len(b.calls)) == (2, 0)


def alternating_per_invocation() -> PreRoutingStrategy:
    """A strategy that picks "a" in the first invocation it sees, "b" in the next, and so on."""
    keys: dict[str, str] = {}
    return PreRoutingStrategy(lambda ctx: keys.setdefault(ctx.invocation.invocation_id, "ab"[len(keys) % 2]))


async def test_a_new_invocation_decides_afresh():
    a, b = tool_then_answer("a"), tool_then_answer("b")
    llm = RoutedLlm(models=[a, b], router=StickyPerInvocation(alternating_per_invocation()))
    agent = LlmAgent(name="assistant", model=llm, tools=[get_weather])
    runner = make_runner(agent, plugins=[RoutingPlugin()])
    session = await runner.session_service.create_session(app_name="test_app", user_id="user")

    await run_agent(agent, "weather?", runner=runner, session_id=session.id)
    await run_agent(agent, "and again?", runner=runner, session_id=session.id)

    assert (len(a.calls), len(b.calls)) == (2, 2)


async def test_a_failed_key_is_replaced_and_the_replacement_sticks():
    a = ScriptedLlm(model="a", script=[ConnectionError("down")])
    b = tool_then_answer("b")
    llm = RoutedLlm(models=[a, b], router=StickyPerInvocation(FallbackStrategy(["a", "b"])))
    agent = LlmAgent(name="assistant", model=llm, tools=[get_weather])

    await run_agent(agent, "weather?", plugins=[RoutingPlugin()])

    assert (len(a.calls), len(b.calls)) == (1, 2)


async def test_without_the_plugin_every_call_is_decided_afresh():
    a, b = tool_then_answer("a"), ScriptedLlm(model="b", script=["done"])
    llm = RoutedLlm(models=[a, b], router=StickyPerInvocation(alternating()))
    agent = LlmAgent(name="assistant", model=llm, tools=[get_weather])

    with pytest.warns(UserWarning, match="RoutingPlugin"):
        await run_agent(agent, "weather?")

    assert (len(a.calls), len(b.calls)) == (1, 1)


def invocation(invocation_id: str) -> InvocationInfo:
    return InvocationInfo("app", "user", "session", invocation_id, "assistant", state={})


async def test_memory_is_bounded_to_the_most_recent_invocations():
    keys = iter(["k1", "k2", "k3"])
    sticky = StickyPerInvocation(PreRoutingStrategy(lambda ctx: next(keys)), max_invocations=1)
    models = {key: ScriptedLlm(model=key) for key in ("k1", "k2", "k3")}

    async def route(invocation_id: str) -> str | None:
        with invocation_scope(invocation(invocation_id)):
            return await sticky(models, make_request(), None)

    first = await route("A")
    await route("B")  # Remembering B forgets A.
    again = await route("A")

    assert (first, again) == ("k1", "k3")


async def test_a_remembered_invocation_gets_its_key_back_outside_adk_too():
    keys = iter(["k1", "k2"])
    sticky = StickyPerInvocation(PreRoutingStrategy(lambda ctx: next(keys)))
    models = {key: ScriptedLlm(model=key) for key in ("k1", "k2")}

    with invocation_scope(invocation("A")):
        picks = [await sticky(models, make_request(), None) for _ in range(2)]

    assert picks == ["k1", "k1"]


def test_max_invocations_is_validated():
    with pytest.raises(ValueError, match="whole number >= 1"):
        StickyPerInvocation(alternating(), max_invocations=0)

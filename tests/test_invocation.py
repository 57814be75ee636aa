"""Routers learn who is asking through RoutingPlugin and current_invocation()."""

from __future__ import annotations

import asyncio

import pytest
from google.adk.agents import LlmAgent, ParallelAgent
from google.genai import types

from routed_llm import InvocationInfo, RoutedLlm, RoutingPlugin, capture_invocation, current_invocation
from routed_llm.strategies import PreRoutingStrategy, RoutingContext
from routed_llm.testing import ScriptedLlm
from tests.conftest import make_request, make_runner, run_agent


def recording_router(seen: list[InvocationInfo | None], key: str = "a"):
    def router(models, llm_request, error_context):
        seen.append(current_invocation())
        return key

    return router


def answering(model: str = "a") -> ScriptedLlm:
    return ScriptedLlm(model=model, script=lambda request: "ok")


async def test_plugin_tells_the_router_who_is_asking():
    seen: list[InvocationInfo | None] = []
    agent = LlmAgent(name="assistant", model=RoutedLlm(models=[answering()], router=recording_router(seen)))

    await run_agent(agent, "hi", plugins=[RoutingPlugin()], user_id="alice")

    [info] = seen
    assert (info.app_name, info.user_id, info.agent_name) == ("test_app", "alice", "assistant")
    assert info.session_id
    assert info.invocation_id


async def test_invocation_is_none_outside_adk():
    seen: list[InvocationInfo | None] = []
    llm = RoutedLlm(models=[answering()], router=recording_router(seen))

    [_ async for _ in llm.generate_content_async(make_request())]

    assert seen == [None]


async def test_capture_invocation_works_as_an_agent_callback_without_the_plugin():
    seen: list[InvocationInfo | None] = []
    llm = RoutedLlm(models=[answering()], router=recording_router(seen))
    agent = LlmAgent(name="assistant", model=llm, before_model_callback=capture_invocation)

    await run_agent(agent, "hi", user_id="bob")

    assert seen[0].user_id == "bob"


async def test_concurrent_sessions_each_see_their_own_user():
    seen: list[InvocationInfo | None] = []
    agent = LlmAgent(name="assistant", model=RoutedLlm(models=[answering()], router=recording_router(seen)))
    runner = make_runner(agent, plugins=[RoutingPlugin()])

    async def turn(user: str) -> str:
        session = await runner.session_service.create_session(app_name="test_app", user_id=user)
        message = types.Content(role="user", parts=[types.Part(text=user)])
        async for _ in runner.run_async(user_id=user, session_id=session.id, new_message=message):
            pass
        return user

    await asyncio.gather(*(turn(f"user-{index}") for index in range(20)))

    assert sorted(info.user_id for info in seen) == sorted(f"user-{index}" for index in range(20))
    assert len({info.invocation_id for info in seen}) == 20


async def test_parallel_agents_each_see_their_own_agent_name():
    seen: list[InvocationInfo | None] = []
    branches = [
        LlmAgent(name=name, model=RoutedLlm(models=[answering()], router=recording_router(seen)))
        for name in ("left", "right")
    ]

    await run_agent(ParallelAgent(name="both", sub_agents=branches), "hi", plugins=[RoutingPlugin()])

    assert sorted(info.agent_name for info in seen) == ["left", "right"]


async def test_a_rule_on_session_state_is_one_line():
    def premium_to_pro(ctx: RoutingContext) -> str:
        return "pro" if ctx.invocation and ctx.invocation.state.get("tier") == "premium" else "flash"

    flash, pro = answering("flash"), answering("pro")
    agent = LlmAgent(
        name="assistant", model=RoutedLlm(models=[flash, pro], router=PreRoutingStrategy(premium_to_pro))
    )
    runner = make_runner(agent, plugins=[RoutingPlugin()])
    premium = await runner.session_service.create_session(
        app_name="test_app", user_id="p", state={"tier": "premium"}
    )
    basic = await runner.session_service.create_session(
        app_name="test_app", user_id="b", state={"tier": "basic"}
    )

    await run_agent(agent, "hi", runner=runner, user_id="p", session_id=premium.id)
    await run_agent(agent, "hi", runner=runner, user_id="b", session_id=basic.id)

    assert (len(pro.calls), len(flash.calls)) == (1, 1)


async def test_the_captured_state_is_read_only():
    seen: list[InvocationInfo | None] = []
    agent = LlmAgent(name="assistant", model=RoutedLlm(models=[answering()], router=recording_router(seen)))

    await run_agent(agent, "hi", plugins=[RoutingPlugin()])

    with pytest.raises(TypeError):
        seen[0].state["tier"] = "premium"  # type: ignore[index]

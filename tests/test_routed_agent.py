"""RoutedAgent: routing whole ADK agents with RoutedLlm's router and failover rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from conftest import get_weather, in_order, make_runner, run_agent, texts
from google.adk.agents import BaseAgent, LlmAgent, ParallelAgent, SequentialAgent
from google.adk.agents.callback_context import CallbackContext
from google.adk.agents.invocation_context import InvocationContext
from google.adk.agents.live_request_queue import LiveRequestQueue
from google.adk.events import Event, EventActions
from google.adk.runners import InMemoryRunner
from google.adk.tools.long_running_tool import LongRunningFunctionTool
from google.genai import types
from pydantic import Field

from routed_llm import (
    ABTestStrategy,
    ErrorContext,
    FailoverEvent,
    FallbackStrategy,
    PreRoutingStrategy,
    RoutedAgent,
    RoutedLlm,
    RouteEvent,
    RoutingContext,
    RoutingError,
    RoutingPlugin,
    WithFallback,
    annotate_route,
    tabulate_arms,
)
from routed_llm.testing import ScriptedLlm, Stream

RECORD = "routed_agent"

# The issue asks for SequentialAgent and ParallelAgent among the routed agents. ADK 2.13 deprecates
# them in favour of Workflow, which cannot yet be a sub-agent, so their warning is expected here.
WORKFLOW_AGENTS_DEPRECATED = pytest.mark.filterwarnings(
    "ignore:(Sequential|Parallel)Agent is deprecated in favor of Workflow:DeprecationWarning"
)


class ScriptAgent(BaseAgent):
    """Writes ``writes`` to the session state, yields ``replies`` as events, then raises ``error``."""

    replies: list[str] = Field(default_factory=list)
    error: Exception | None = None
    writes: dict[str, object] = Field(default_factory=dict)
    runs: list[str] = Field(default_factory=list)

    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        async for event in self._script(ctx, "async"):
            yield event

    async def _run_live_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        async for event in self._script(ctx, "live"):
            yield event

    async def _script(self, ctx: InvocationContext, mode: str) -> AsyncGenerator[Event, None]:
        self.runs.append(mode)
        ctx.session.state.update(self.writes)
        for reply in self.replies:
            yield Event(author=self.name, invocation_id=ctx.invocation_id, content=types.ModelContent(reply))
        if self.error is not None:
            raise self.error


def llm_agent(name: str, *script: object, **kwargs: object) -> LlmAgent:
    return LlmAgent(name=name, model=ScriptedLlm(model=f"{name}-model", script=list(script)), **kwargs)


def echo_instruction() -> ScriptedLlm:
    """A model that answers with the system instruction it was given."""
    return ScriptedLlm(model="echo", script=lambda request: str(request.config.system_instruction))


def routed(agents: dict[str, BaseAgent], router: object, **kwargs: object) -> RoutedAgent:
    return RoutedAgent(name="support", agents=agents, router=router, **kwargs)


def answers(events: list[Event]) -> list[str]:
    return texts([event for event in events if not event.partial])


# Routing and failover ---------------------------------------------------------------------------


async def test_router_first_pick_runs_and_its_events_carry_the_route_record() -> None:
    agent = routed(
        {"billing": llm_agent("billing", "Your invoice is paid."), "general": llm_agent("general")},
        in_order(["billing", "general"]),
    )

    events, stored = await run_agent(agent, "Was my invoice paid?")

    assert answers(events) == ["Your invoice is paid."]
    assert events[-1].author == "billing"
    assert stored[-1].custom_metadata == {
        RECORD: {
            "router": "support",
            "key": "billing",
            "agent": "billing",
            "failed_keys": [],
            "errors": {},
            "attempts": 1,
        }
    }


async def test_router_is_recalled_with_error_context_when_the_agent_fails_before_any_event() -> None:
    down = ConnectionError("billing model down")
    router = in_order(["billing", "general"])
    agent = routed({"billing": llm_agent("billing", down), "general": llm_agent("general", "Hello!")}, router)

    events, _ = await run_agent(agent, "hi")

    assert answers(events) == ["Hello!"]
    context = router.seen[1]
    assert isinstance(context, ErrorContext)
    assert context.failed_keys == {"billing"}
    assert context.last_error is down
    assert dict(context.errors) == {"billing": down}
    assert events[-1].custom_metadata[RECORD]["failed_keys"] == ["billing"]
    assert events[-1].custom_metadata[RECORD]["errors"] == {"billing": "ConnectionError"}
    assert events[-1].custom_metadata[RECORD]["attempts"] == 2


async def test_router_that_stops_lets_the_last_error_propagate_as_the_very_object() -> None:
    down = ConnectionError("down")
    agent = routed({"billing": llm_agent("billing", down)}, in_order(["billing"]))

    with pytest.raises(ConnectionError) as raised:
        await run_agent(agent, "hi")

    assert raised.value is down


async def test_router_choosing_a_key_that_already_failed_stops_with_the_last_error() -> None:
    down = ConnectionError("down")
    calls: list[str] = []

    def stubborn(agents, ctx, error_context):
        calls.append("ask")
        return "billing"

    agent = routed({"billing": llm_agent("billing", down), "general": llm_agent("general")}, stubborn)

    with pytest.raises(ConnectionError) as raised:
        await run_agent(agent, "hi")

    assert raised.value is down
    assert calls == ["ask", "ask"]


async def test_no_first_pick_is_a_routing_error() -> None:
    agent = routed({"general": llm_agent("general")}, lambda agents, ctx, error_context: None)

    with pytest.raises(RoutingError, match="chose no agent"):
        await run_agent(agent, "hi")


async def test_unknown_first_pick_is_a_routing_error_naming_the_keys() -> None:
    agent = routed({"general": llm_agent("general")}, lambda agents, ctx, error_context: "sales")

    with pytest.raises(RoutingError, match=r"'sales', which is not one of the routed agents.*'general'"):
        await run_agent(agent, "hi")


async def test_unknown_key_after_a_failure_is_a_routing_error_chained_to_the_last_error() -> None:
    down = ConnectionError("down")

    def router(agents, ctx, error_context):
        return "billing" if error_context is None else "sales"

    agent = routed({"billing": llm_agent("billing", down)}, router)

    with pytest.raises(RoutingError) as raised:
        await run_agent(agent, "hi")

    assert raised.value.__cause__ is down


async def test_error_after_the_first_event_propagates_without_asking_the_router_again() -> None:
    late = RuntimeError("broke mid-answer")
    router = in_order(["billing", "general"])
    general = ScriptAgent(name="general", replies=["fallback"])
    agent = routed(
        {"billing": ScriptAgent(name="billing", replies=["partial"], error=late), "general": general}, router
    )

    with pytest.raises(RuntimeError) as raised:
        await run_agent(agent, "hi")

    assert raised.value is late
    assert len(router.seen) == 1
    assert general.runs == []


async def test_each_key_runs_at_most_once_per_invocation() -> None:
    billing = ScriptAgent(name="billing", error=ConnectionError("down"))
    general = ScriptAgent(name="general", error=ConnectionError("down too"))

    def router(agents, ctx, error_context):
        return "general" if error_context and "general" not in error_context.failed_keys else "billing"

    with pytest.raises(ConnectionError, match="down too"):
        await run_agent(routed({"billing": billing, "general": general}, router), "hi")

    assert billing.runs == ["async"]
    assert general.runs == ["async"]


async def test_streaming_partial_events_pass_through_stamped_as_they_come() -> None:
    agent = routed({"general": llm_agent("general", Stream(["Hel", "lo"]))}, in_order(["general"]))

    events, _ = await run_agent(agent, "hi", streaming=True)

    partials = [event for event in events if event.partial]
    assert texts(partials) == ["Hel", "lo"]
    assert all(event.custom_metadata[RECORD]["key"] == "general" for event in events)


async def test_a_failed_attempt_leaves_no_event_and_no_state_change_in_the_session() -> None:
    billing = ScriptAgent(
        name="billing", writes={"plan": "gold", "seen_by_billing": True}, error=ConnectionError("down")
    )
    general = ScriptAgent(name="general", replies=["Hello!"])
    agent = routed({"billing": billing, "general": general}, in_order(["billing", "general"]))
    runner = make_runner(agent)
    session = await runner.session_service.create_session(
        app_name="test_app", user_id="user", state={"plan": "basic"}
    )

    _, stored = await run_agent(agent, "hi", runner=runner, session_id=session.id)

    after = await runner.session_service.get_session(
        app_name="test_app", user_id="user", session_id=session.id
    )
    assert [event.author for event in stored] == ["user", "general"]
    assert after is not None
    assert after.state == {"plan": "basic"}


async def test_an_agent_that_only_wrote_state_before_failing_still_fails_over() -> None:
    def remember_plan(callback_context: CallbackContext) -> None:
        callback_context.state["plan"] = "gold"

    billing = llm_agent("billing", ConnectionError("down"), before_agent_callback=remember_plan)
    agent = routed(
        {"billing": billing, "general": llm_agent("general", "Hello!")}, in_order(["billing", "general"])
    )
    runner = make_runner(agent)
    session = await runner.session_service.create_session(app_name="test_app", user_id="user")

    events, stored = await run_agent(agent, "hi", runner=runner, session_id=session.id)

    after = await runner.session_service.get_session(
        app_name="test_app", user_id="user", session_id=session.id
    )
    assert answers(events) == ["Hello!"]
    assert [event.author for event in stored] == ["user", "general"]
    assert after is not None
    assert "plan" not in after.state


async def test_state_events_before_the_first_output_pass_on_when_the_agent_answers() -> None:
    def remember_plan(callback_context: CallbackContext) -> None:
        callback_context.state["plan"] = "gold"

    billing = llm_agent("billing", "Paid.", before_agent_callback=remember_plan)
    agent = routed({"billing": billing}, in_order(["billing"]))
    runner = make_runner(agent)
    session = await runner.session_service.create_session(app_name="test_app", user_id="user")

    events, _ = await run_agent(agent, "hi", runner=runner, session_id=session.id)

    after = await runner.session_service.get_session(
        app_name="test_app", user_id="user", session_id=session.id
    )
    assert after is not None
    assert after.state["plan"] == "gold"
    assert all(event.custom_metadata[RECORD]["key"] == "billing" for event in events)


async def test_changes_inside_nested_state_values_are_undone_after_a_failed_attempt() -> None:
    seen: list[object] = []

    class Upgrader(BaseAgent):
        async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
            ctx.session.state["profile"]["tier"] = "gold"
            ctx.session.state["items"].append("extra")
            raise ConnectionError("down")
            yield

    class Reader(BaseAgent):
        async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
            seen.append((ctx.session.state["profile"], ctx.session.state["items"]))
            yield Event(author=self.name, content=types.ModelContent("read"))

    agent = routed({"up": Upgrader(name="up"), "read": Reader(name="read")}, in_order(["up", "read"]))
    runner = make_runner(agent)
    session = await runner.session_service.create_session(
        app_name="test_app", user_id="user", state={"profile": {"tier": "basic"}, "items": []}
    )

    await run_agent(agent, "hi", runner=runner, session_id=session.id)

    assert seen == [({"tier": "basic"}, [])]


@WORKFLOW_AGENTS_DEPRECATED
async def test_rolling_back_an_attempt_keeps_what_a_parallel_sibling_committed_meanwhile() -> None:
    committed = asyncio.Event()

    class Sibling(BaseAgent):
        async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
            yield Event(
                author=self.name,
                content=types.ModelContent("noted"),
                actions=EventActions(state_delta={"sibling": "written"}),
            )
            committed.set()

    class FailsAfterSibling(BaseAgent):
        async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
            await committed.wait()
            raise ConnectionError("down")
            yield

    class Reader(BaseAgent):
        async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
            yield Event(author=self.name, content=types.ModelContent(str(ctx.session.state.get("sibling"))))

    support = routed(
        {"flaky": FailsAfterSibling(name="flaky"), "general": ScriptAgent(name="general", replies=["G"])},
        in_order(["flaky", "general"]),
    )
    root = SequentialAgent(
        name="root",
        sub_agents=[
            ParallelAgent(name="both", sub_agents=[Sibling(name="sibling"), support]),
            Reader(name="reader"),
        ],
    )

    events, _ = await run_agent(root, "hi")

    assert answers(events)[-1] == "written"


# Live -------------------------------------------------------------------------------------------


async def run_live(agent: BaseAgent) -> list[Event]:
    runner = make_runner(agent)
    session = await runner.session_service.create_session(app_name="test_app", user_id="user")
    queue = LiveRequestQueue()
    queue.close()
    return [
        event
        async for event in runner.run_live(user_id="user", session_id=session.id, live_request_queue=queue)
    ]


async def test_run_live_fails_over_before_the_first_event_like_run_async() -> None:
    billing = ScriptAgent(name="billing", error=ConnectionError("down"))
    general = ScriptAgent(name="general", replies=["live hello"])

    events = await run_live(
        routed({"billing": billing, "general": general}, in_order(["billing", "general"]))
    )

    assert texts(events) == ["live hello"]
    assert events[0].custom_metadata[RECORD]["failed_keys"] == ["billing"]
    assert (billing.runs, general.runs) == (["live"], ["live"])


async def test_run_live_error_after_the_first_event_propagates() -> None:
    late = RuntimeError("late")
    billing = ScriptAgent(name="billing", replies=["a"], error=late)
    general = ScriptAgent(name="general", replies=["b"])

    with pytest.raises(RuntimeError) as raised:
        await run_live(routed({"billing": billing, "general": general}, in_order(["billing", "general"])))

    assert raised.value is late
    assert general.runs == []


# Records ----------------------------------------------------------------------------------------


async def test_events_from_a_routed_llm_inside_keep_both_records() -> None:
    model = RoutedLlm(
        models={
            "pro": ScriptedLlm(model="pro", script=[ConnectionError("x")]),
            "flash": ScriptedLlm(model="flash", script=["Hi"]),
        },
        router=FallbackStrategy(["pro", "flash"]),
    )
    agent = routed({"general": LlmAgent(name="general", model=model)}, in_order(["general"]))

    events, _ = await run_agent(agent, "hi")

    metadata = events[-1].custom_metadata
    assert metadata["routed_llm"]["key"] == "flash"
    assert metadata["routed_llm"]["failed_keys"] == ["pro"]
    assert metadata[RECORD]["key"] == "general"


async def test_a_routed_agent_inside_a_routed_agent_keeps_the_inner_record() -> None:
    inner = RoutedAgent(
        name="inner_router",
        agents={
            "a": ScriptAgent(name="a", error=ConnectionError("x")),
            "b": ScriptAgent(name="b", replies=["ok"]),
        },
        router=in_order(["a", "b"]),
    )
    outer = RoutedAgent(name="outer", agents={"inner": inner}, router=in_order(["inner"]))

    events, _ = await run_agent(outer, "hi")

    record = events[-1].custom_metadata[RECORD]
    assert (record["router"], record["key"], record["agent"]) == ("outer", "inner", "inner_router")
    assert record["inner"]["router"] == "inner_router"
    assert record["inner"]["key"] == "b"
    assert record["inner"]["failed_keys"] == ["a"]


async def test_router_annotations_are_recorded_on_every_event() -> None:
    def router(agents, ctx, error_context):
        annotate_route(reason="billing words")
        return "billing"

    agent = routed({"billing": ScriptAgent(name="billing", replies=["one", "two"])}, router)

    events, _ = await run_agent(agent, "hi")

    assert [event.custom_metadata[RECORD]["reason"] for event in events] == ["billing words"] * 2


async def test_hooks_report_each_attempt_and_failover_with_the_agent_names() -> None:
    routes: list[RouteEvent] = []
    failovers: list[FailoverEvent] = []
    agent = routed(
        {
            "billing": ScriptAgent(name="billing_agent", error=ConnectionError("x")),
            "general": ScriptAgent(name="general_agent", replies=["hi"]),
        },
        in_order(["billing", "general"]),
        on_route=routes.append,
        on_failover=failovers.append,
    )

    await run_agent(agent, "hi")

    assert [(event.key, event.model, event.attempt) for event in routes] == [
        ("billing", "billing_agent", 1),
        ("general", "general_agent", 2),
    ]
    assert [(event.key, event.next_key, type(event.error)) for event in failovers] == [
        ("billing", "general", ConnectionError)
    ]


# The agent tree ---------------------------------------------------------------------------------


def test_routed_agents_are_sub_agents_found_by_name() -> None:
    billing, general = llm_agent("billing"), llm_agent("general")

    root = routed({"billing": billing, "general": general}, in_order(["billing"]))

    assert root.sub_agents == [billing, general]
    assert billing.parent_agent is root
    assert root.find_agent("general") is general
    assert dict(root.agents) == {"billing": billing, "general": general}


def test_a_sequence_of_agents_is_keyed_by_agent_name() -> None:
    billing, general = llm_agent("billing"), llm_agent("general")

    root = RoutedAgent(name="support", agents=[billing, general], router=in_order(["billing"]))

    assert list(root.agents) == ["billing", "general"]


@WORKFLOW_AGENTS_DEPRECATED
def test_an_agent_that_already_has_a_parent_is_refused_by_name() -> None:
    billing = llm_agent("billing")
    SequentialAgent(name="pipeline", sub_agents=[billing])

    with pytest.raises(ValueError, match=r"'billing'.*already belongs to 'pipeline'"):
        routed({"billing": billing}, in_order(["billing"]))


@pytest.mark.parametrize(
    ("agents", "router", "error", "message"),
    [
        ({}, in_order([]), ValueError, "is empty"),
        ([], in_order([]), ValueError, "is empty"),
        ({"a": "not an agent"}, in_order([]), TypeError, "the entry for 'a' is a str"),
        ("billing", in_order([]), TypeError, "takes a mapping"),
        ({"": None}, in_order([]), TypeError, "entry for '' is a NoneType"),
        ({"a": object()}, in_order([]), TypeError, "is an ADK agent"),
        ({"general": None}, "general", TypeError, "must be callable"),
    ],
)
def test_bad_construction_is_refused_with_a_message_saying_how_to_fix_it(
    agents, router, error, message
) -> None:
    if agents == {"general": None}:
        agents = {"general": llm_agent("general")}

    with pytest.raises(error, match=message):
        RoutedAgent(name="support", agents=agents, router=router)


def test_two_agents_with_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match="both named 'twin'"):
        routed({"a": llm_agent("twin"), "b": llm_agent("twin")}, in_order(["a"]))


def test_a_sequence_naming_an_agent_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        RoutedAgent(name="support", agents=[llm_agent("twin"), llm_agent("twin")], router=in_order([]))


def test_strategy_keys_missing_from_the_agents_are_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"\['sales'\].*Add those agents"):
        routed({"general": llm_agent("general")}, FallbackStrategy(["sales", "general"]))


def test_a_hook_that_is_not_callable_is_refused() -> None:
    with pytest.raises(TypeError, match="on_failover"):
        routed({"general": llm_agent("general")}, in_order(["general"]), on_failover="log")


# Inside real agent trees ------------------------------------------------------------------------


@WORKFLOW_AGENTS_DEPRECATED
async def test_workflow_agents_and_llm_agents_with_tools_can_be_routed() -> None:
    call = types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"}))
    pipeline = SequentialAgent(
        name="pipeline",
        sub_agents=[
            ParallelAgent(name="fan_out", sub_agents=[llm_agent("left", "L"), llm_agent("right", "R")]),
            llm_agent("weather", call, "Sunny in Paris.", tools=[get_weather]),
        ],
    )
    agent = routed({"pipeline": pipeline, "general": llm_agent("general")}, in_order(["pipeline", "general"]))

    events, stored = await run_agent(agent, "weather?")

    assert answers(events)[-1] == "Sunny in Paris."
    assert {event.author for event in stored} >= {"left", "right", "weather"}
    responses = [event for event in stored if event.get_function_responses()]
    assert responses[0].get_function_responses()[0].response == {"forecast": "sunny in Paris"}
    assert all(
        event.custom_metadata[RECORD]["key"] == "pipeline" for event in stored if event.author != "user"
    )


async def test_an_llm_agent_transfers_into_a_routed_agent_which_routes() -> None:
    transfer = types.Part(
        function_call=types.FunctionCall(name="transfer_to_agent", args={"agent_name": "support"})
    )
    support = routed(
        {
            "billing": ScriptAgent(name="billing", error=ConnectionError("x")),
            "general": ScriptAgent(name="general", replies=["Support here."]),
        },
        in_order(["billing", "general"]),
        description="Answers support questions.",
    )
    root = LlmAgent(
        name="front_desk", model=ScriptedLlm(model="desk", script=[transfer]), sub_agents=[support]
    )

    events, _ = await run_agent(root, "I need support")

    assert answers(events)[-1] == "Support here."
    assert events[-1].custom_metadata[RECORD]["failed_keys"] == ["billing"]


async def test_each_user_turn_is_routed_afresh() -> None:
    router = in_order(["billing", "general"])
    agent = routed(
        {
            "billing": llm_agent("billing", "first", ConnectionError("down")),
            "general": llm_agent("general", "second"),
        },
        router,
    )
    runner = make_runner(agent)
    session = await runner.session_service.create_session(app_name="test_app", user_id="user")

    first, _ = await run_agent(agent, "one", runner=runner, session_id=session.id)
    second, _ = await run_agent(agent, "two", runner=runner, session_id=session.id)

    assert answers(first) == ["first"]
    assert answers(second) == ["second"]
    assert router.seen[0] is None
    assert router.seen[1] is None
    assert router.seen[2].failed_keys == {"billing"}


def approve(amount: int) -> dict[str, str]:
    """Asks a human to approve a refund."""
    return {"status": "pending"}


def refund_agent() -> LlmAgent:
    """A billing agent that calls the long-running ``approve`` tool, then answers once it is answered."""
    call = types.Part(function_call=types.FunctionCall(name="approve", args={"amount": 5}, id="call-1"))
    return llm_agent(
        "billing",
        call,
        "Waiting for approval.",
        "Refund approved.",
        tools=[LongRunningFunctionTool(func=approve)],
    )


async def answer_approval(runner: InMemoryRunner, session_id: str) -> list[Event]:
    """Sends the user's answer to the ``approve`` call, as a new turn."""
    answer = types.Content(
        role="user",
        parts=[
            types.Part(
                function_response=types.FunctionResponse(
                    name="approve", id="call-1", response={"status": "approved"}
                )
            )
        ],
    )
    return [
        event async for event in runner.run_async(user_id="user", session_id=session_id, new_message=answer)
    ]


async def test_a_long_running_tool_is_answered_by_the_agent_that_asked_without_rerouting() -> None:
    router = in_order(["billing", "general"])
    agent = routed({"billing": refund_agent(), "general": llm_agent("general", "wrong agent")}, router)
    runner = make_runner(agent)
    session = await runner.session_service.create_session(app_name="test_app", user_id="user")
    await run_agent(agent, "refund me", runner=runner, session_id=session.id)

    resumed = await answer_approval(runner, session.id)

    assert answers(resumed) == ["Refund approved."]
    assert resumed[-1].author == "billing"
    assert len(router.seen) == 1


async def test_with_the_plugin_resumed_events_carry_the_route_of_the_call_they_answer() -> None:
    general = llm_agent("general", ConnectionError("x"), "General here.")
    agent = routed({"general": general, "billing": refund_agent()}, in_order(["general", "billing"]))
    runner = make_runner(agent, plugins=[RoutingPlugin()])
    session = await runner.session_service.create_session(app_name="test_app", user_id="user")
    await run_agent(agent, "refund me", runner=runner, session_id=session.id)
    await run_agent(agent, "another question", runner=runner, session_id=session.id)  # General serves it.

    resumed = await answer_approval(runner, session.id)

    assert answers(resumed) == ["Refund approved."]
    record = resumed[-1].custom_metadata[RECORD]
    assert (record["key"], record["failed_keys"], record["resumed"]) == ("billing", ["general"], True)


# Strategies as agent routers --------------------------------------------------------------------


async def test_strategies_see_the_users_message_and_the_invocation_but_no_request() -> None:
    seen: list[RoutingContext] = []

    def pick(ctx: RoutingContext) -> str:
        seen.append(ctx)
        return "billing" if "invoice" in ctx.input_text else "general"

    agent = routed(
        {
            "billing": ScriptAgent(name="billing", replies=["B"]),
            "general": ScriptAgent(name="general", replies=["G"]),
        },
        WithFallback(PreRoutingStrategy(pick), fallback_order=["general"]),
    )

    events, _ = await run_agent(agent, "Where is my invoice?", user_id="ana")

    assert answers(events) == ["B"]
    ctx = seen[0]
    assert ctx.request is None
    assert ctx.input_text == "Where is my invoice?"
    assert ctx.invocation is not None
    assert ctx.invocation.user_id == "ana"
    assert ctx.system_instruction_text == ""


async def test_fallback_strategy_fails_over_between_agents() -> None:
    agent = routed(
        {
            "billing": ScriptAgent(name="billing", error=ConnectionError("x")),
            "general": ScriptAgent(name="general", replies=["G"]),
        },
        FallbackStrategy(["billing", "general"]),
    )

    events, _ = await run_agent(agent, "hi")

    assert answers(events) == ["G"]


async def test_ab_test_of_two_agents_by_user_records_the_arm_and_tabulates() -> None:
    strategy = ABTestStrategy("prompt", {"terse": 50, "friendly": 50}, default_arm="terse")
    agent = routed(
        {
            "terse": LlmAgent(name="terse", model=echo_instruction(), instruction="Be terse."),
            "friendly": LlmAgent(name="friendly", model=echo_instruction(), instruction="Be friendly."),
        },
        strategy,
    )
    runner = make_runner(agent)
    stored_events: list[Event] = []
    arms: dict[str, str] = {}

    for user in ("u1", "u2", "u3", "u4", "u5", "u6"):
        events, stored = await run_agent(agent, "hi", user_id=user, runner=runner)
        arms[user] = events[-1].custom_metadata[RECORD]["arm"]
        stored_events += stored
    again, _ = await run_agent(agent, "hi", user_id="u1", runner=runner)

    assert again[-1].custom_metadata[RECORD]["arm"] == arms["u1"]
    assert answers(again)[0].startswith({"terse": "Be terse.", "friendly": "Be friendly."}[arms["u1"]])
    table = tabulate_arms(stored_events, experiment="prompt")
    assert sum(stats.answers for stats in table.values()) == 6
    assert {arm: stats.answers for arm, stats in table.items()} == {
        arm: list(arms.values()).count(arm) for arm in set(arms.values())
    }


async def test_cancelling_the_invocation_does_not_fail_over() -> None:
    started = asyncio.Event()
    never = asyncio.Event()

    class Waiting(BaseAgent):
        async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
            started.set()
            await never.wait()
            yield Event(author=self.name)

    general = ScriptAgent(name="general", replies=["G"])
    agent = routed({"slow": Waiting(name="slow"), "general": general}, in_order(["slow", "general"]))
    task = asyncio.create_task(run_agent(agent, "hi"))
    await started.wait()

    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert general.runs == []


async def test_tabulate_arms_counts_one_answer_per_invocation_however_many_events_it_took() -> None:
    def weather_model(request):
        if request.contents[-1].parts[0].function_response:
            return "Sunny."
        return types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"}))

    def tool_agent(name: str) -> LlmAgent:
        return LlmAgent(name=name, model=ScriptedLlm(model=name, script=weather_model), tools=[get_weather])

    agent = routed(
        {"a": tool_agent("a"), "b": tool_agent("b")},
        ABTestStrategy("tools", {"a": 1, "b": 1}, default_arm="a"),
    )
    runner = make_runner(agent)
    stored_events: list[Event] = []

    for user in ("u1", "u2", "u3", "u4"):
        _, stored = await run_agent(agent, "weather?", user_id=user, runner=runner)
        stored_events += stored

    assert len([event for event in stored_events if event.author != "user"]) == 12
    assert sum(stats.answers for stats in tabulate_arms(stored_events).values()) == 4


async def test_agent_callbacks_are_accepted_like_any_adk_agents() -> None:
    seen: list[str] = []
    agent = routed(
        {"general": ScriptAgent(name="general", replies=["G"])},
        in_order(["general"]),
        before_agent_callback=lambda callback_context: seen.append(callback_context.agent_name),
    )

    await run_agent(agent, "hi")

    assert seen == ["support"]


def test_a_routed_agent_named_like_the_router_is_refused() -> None:
    with pytest.raises(ValueError, match="named 'support', like the RoutedAgent"):
        routed({"a": llm_agent("support")}, in_order(["a"]))


def test_a_strategy_class_instead_of_an_instance_is_refused() -> None:
    with pytest.raises(TypeError, match="pass an instance"):
        routed({"general": llm_agent("general")}, FallbackStrategy)


async def test_a_renamed_clone_records_its_own_name() -> None:
    original = routed({"general": ScriptAgent(name="general", replies=["G"])}, in_order(["general"]))

    clone = original.clone(update={"name": "support_eu"})
    events, _ = await run_agent(clone, "hi")

    assert events[-1].custom_metadata[RECORD]["router"] == "support_eu"
    assert clone.agents["general"].parent_agent is clone


def test_cloning_with_other_sub_agents_is_refused() -> None:
    original = routed({"general": llm_agent("general")}, in_order(["general"]))

    with pytest.raises(ValueError, match="build a new RoutedAgent"):
        original.clone(update={"sub_agents": [llm_agent("other")]})

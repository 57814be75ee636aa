"""RoutedAgent's rollback of a failed attempt, its held events, error events, time limits and health.

Every test runs through a real ADK runner: ``InMemoryRunner``, or ``Runner`` on ADK's
``SqliteSessionService``.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import in_order, make_runner, run_agent, texts
from google.adk.agents import BaseAgent, LlmAgent, ParallelAgent, SequentialAgent
from google.adk.agents.callback_context import CallbackContext
from google.adk.agents.invocation_context import InvocationContext
from google.adk.apps import App
from google.adk.artifacts import InMemoryArtifactService
from google.adk.events import Event, EventActions
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions.sqlite_session_service import SqliteSessionService
from google.genai import types
from pydantic import BaseModel

from routed_llm import DeadlineExceeded, HealthTracker, RoutedAgent, RoutingPlugin
from routed_llm.strategies import FallbackStrategy
from routed_llm.testing import ScriptedLlm

RECORD = "routed_agent"

WORKFLOW_AGENTS_DEPRECATED = pytest.mark.filterwarnings(
    "ignore:(Sequential|Parallel)Agent is deprecated in favor of Workflow:DeprecationWarning"
)


def llm_agent(name: str, *script: object, **kwargs: Any) -> LlmAgent:
    return LlmAgent(name=name, model=ScriptedLlm(model=f"{name}-model", script=list(script)), **kwargs)


def echo_agent(name: str, instruction: str) -> LlmAgent:
    """An LlmAgent whose model answers with the first line of the system instruction it was given."""
    model = ScriptedLlm(
        model=f"{name}-model", script=lambda request: str(request.config.system_instruction).split("\n")[0]
    )
    return LlmAgent(name=name, model=model, instruction=instruction)


def routed(agents: dict[str, BaseAgent], router: object, **kwargs: Any) -> RoutedAgent:
    return RoutedAgent(name="support", agents=agents, router=router, **kwargs)


def answers(events: list[Event]) -> list[str]:
    return texts([event for event in events if not event.partial])


class Fails(BaseAgent):
    """Raises ConnectionError after running ``act`` on its context, before any event."""

    act: Any = None

    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        if self.act is not None:
            self.act(ctx)
        raise ConnectionError("down")
        yield


class Says(BaseAgent):
    """Answers with ``see(ctx)``."""

    see: Any = None

    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        yield Event(author=self.name, content=types.ModelContent(str(self.see(ctx))))


class Hangs(BaseLlm):
    """A model that waits for an event nobody sets."""

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        await asyncio.Event().wait()
        yield LlmResponse()


async def session_with(runner: Runner, state: dict[str, Any]) -> str:
    session = await runner.session_service.create_session(app_name="test_app", user_id="user", state=state)
    return session.id


def sqlite_runner(agent: BaseAgent, folder: Path) -> Runner:
    """A runner on ADK's SqliteSessionService, in ``folder``."""
    return Runner(
        app=App(name="test_app", root_agent=agent, plugins=[RoutingPlugin()]),
        session_service=SqliteSessionService(str(folder / "sessions.db")),
        artifact_service=InMemoryArtifactService(),
    )


async def stored_session(runner: Runner, session_id: str) -> Any:
    return await runner.session_service.get_session(
        app_name="test_app", user_id="user", session_id=session_id
    )


# 1. Held bookkeeping events ----------------------------------------------------------------------


class Classify(BaseAgent):
    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        yield Event(author=self.name, actions=EventActions(state_delta={"topic": "refunds"}))


@WORKFLOW_AGENTS_DEPRECATED
async def test_a_held_state_delta_is_seen_by_the_next_step_of_a_routed_pipeline() -> None:
    pipeline = SequentialAgent(
        name="pipeline", sub_agents=[Classify(name="classify"), echo_agent("answer", "Topic: {topic}")]
    )
    agent = routed({"pipeline": pipeline}, in_order(["pipeline"]))

    events, _ = await run_agent(agent, "hi")

    assert answers(events) == ["Topic: refunds"]


@WORKFLOW_AGENTS_DEPRECATED
async def test_a_held_state_delta_is_undone_when_the_pipeline_fails_before_output() -> None:
    pipeline = SequentialAgent(
        name="pipeline", sub_agents=[Classify(name="classify"), llm_agent("answer", ConnectionError("down"))]
    )
    general = Says(name="general", see=lambda ctx: ctx.session.state.get("topic", "no topic"))
    agent = routed({"pipeline": pipeline, "general": general}, in_order(["pipeline", "general"]))

    events, _ = await run_agent(agent, "hi")

    assert answers(events) == ["no topic"]


# 2. Array-like values ------------------------------------------------------------------------------


async def test_failover_works_with_a_numpy_array_in_the_state() -> None:
    def overwrite(ctx: InvocationContext) -> None:
        ctx.session.state["embedding"] = np.zeros(3)

    general = Says(name="general", see=lambda ctx: ctx.session.state["embedding"].tolist())
    agent = routed(
        {"flaky": Fails(name="flaky", act=overwrite), "general": general}, in_order(["flaky", "general"])
    )
    runner = make_runner(agent)
    session_id = await session_with(runner, {"embedding": np.ones(3)})

    events, _ = await run_agent(agent, "hi", runner=runner, session_id=session_id)

    assert answers(events) == ["[1.0, 1.0, 1.0]"]


async def test_a_timeout_around_a_turn_with_a_numpy_array_in_the_state_raises_timeout_error() -> None:
    def embed_query(callback_context: CallbackContext) -> None:
        callback_context.state["temp:query"] = np.ones(3)

    slow = LlmAgent(name="slow", model=Hangs(model="hangs"), before_agent_callback=embed_query)
    agent = routed({"slow": slow}, in_order(["slow"]))
    runner = make_runner(agent)
    session_id = await session_with(runner, {"embedding": np.ones(3)})

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await run_agent(agent, "hi", runner=runner, session_id=session_id)


# 3. A ParallelAgent sibling's temp: state ---------------------------------------------------------


@WORKFLOW_AGENTS_DEPRECATED
@pytest.mark.parametrize("service", ["in_memory", "sqlite"])
async def test_a_parallel_siblings_committed_temp_state_survives_a_failed_attempt(
    service: str, tmp_path: Path
) -> None:
    committed = asyncio.Event()

    def done(callback_context: CallbackContext) -> None:
        committed.set()

    class FailsAfterSibling(BaseAgent):
        async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
            await committed.wait()
            raise ConnectionError("down")
            yield

    researcher = llm_agent("researcher", "found it", output_key="temp:research", after_agent_callback=done)
    support = routed(
        {"flaky": FailsAfterSibling(name="flaky"), "general": Says(name="general", see=lambda ctx: "G")},
        in_order(["flaky", "general"]),
    )
    root = SequentialAgent(
        name="root",
        sub_agents=[
            ParallelAgent(name="fan_out", sub_agents=[researcher, support]),
            echo_agent("writer", "Research: {temp:research}"),
        ],
    )
    runner = make_runner(root) if service == "in_memory" else sqlite_runner(root, tmp_path)
    session_id = await session_with(runner, {})

    events, _ = await run_agent(root, "hi", runner=runner, session_id=session_id)

    assert answers(events)[-1] == "Research: found it"


# 4. Duplicate names anywhere in the routed trees -----------------------------------------------------


def test_a_name_used_twice_below_the_routed_agents_is_refused_naming_both_paths() -> None:
    def arm(name: str) -> SequentialAgent:
        return SequentialAgent(name=name, sub_agents=[llm_agent("refunds", "ok")])

    with pytest.raises(ValueError, match=r"basic/refunds.*premium/refunds"):
        routed({"basic": arm("basic"), "premium": arm("premium")}, in_order(["basic"]))


def test_a_routed_agent_named_like_a_descendant_of_an_arm_is_refused() -> None:
    arm = SequentialAgent(name="arm", sub_agents=[llm_agent("support", "ok")])

    with pytest.raises(ValueError, match=r"arm/support"):
        routed({"arm": arm}, in_order(["arm"]))


# 5. No copy of the session state on a turn without failure ----------------------------------------


class CountsCopies:
    """A state value that counts how often it is deep-copied."""

    copies = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> CountsCopies:
        type(self).copies += 1
        return self


async def copies_in_one_turn(agent: BaseAgent) -> int:
    runner = make_runner(agent)
    session_id = await session_with(runner, {"blob": CountsCopies()})
    CountsCopies.copies = 0
    await run_agent(agent, "hi", runner=runner, session_id=session_id)
    return CountsCopies.copies


async def test_a_turn_without_failure_copies_no_state_value_beyond_what_adk_copies() -> None:
    unrouted = await copies_in_one_turn(llm_agent("solo", "Hello!"))
    routed_copies = await copies_in_one_turn(
        routed({"solo": llm_agent("solo", "Hello!")}, in_order(["solo"]))
    )

    assert routed_copies == unrouted


# 6. Identity of values the attempt did not change ----------------------------------------------------


class Budget:
    def __init__(self) -> None:
        self.spent = 0


async def test_a_value_the_failed_attempt_only_read_keeps_its_identity() -> None:
    budget = Budget()
    seen: list[object] = []

    def charge(ctx: InvocationContext) -> None:
        seen.append(ctx.session.state["temp:budget"])
        ctx.session.state["temp:budget"].spent += 1

    def put_budget(callback_context: CallbackContext) -> None:
        callback_context.state["temp:budget"] = budget

    general = Says(name="general", see=lambda ctx: seen.append(ctx.session.state["temp:budget"]))
    agent = routed(
        {"flaky": Fails(name="flaky", act=charge), "general": general},
        in_order(["flaky", "general"]),
        before_agent_callback=put_budget,
    )

    await run_agent(agent, "hi")

    assert seen[0] is budget
    assert seen[1] is budget
    assert budget.spent == 1


async def test_values_nobody_touched_keep_their_identity_after_a_failed_attempt() -> None:
    budget = Budget()
    seen: list[object] = []

    def put_budget(callback_context: CallbackContext) -> None:
        callback_context.state["temp:budget"] = budget

    def write_other(ctx: InvocationContext) -> None:
        ctx.session.state["plan"] = "gold"

    general = Says(name="general", see=lambda ctx: seen.append(ctx.session.state["temp:budget"]))
    agent = routed(
        {"flaky": Fails(name="flaky", act=write_other), "general": general},
        in_order(["flaky", "general"]),
        before_agent_callback=put_budget,
    )

    await run_agent(agent, "hi")

    assert seen == [budget]


# 7. A value that cannot be deep-copied ----------------------------------------------------------------


async def test_an_uncopyable_value_leaves_nested_rollback_of_other_keys_exact() -> None:
    client = httpx.AsyncClient()

    def put_client(callback_context: CallbackContext) -> None:
        callback_context.state["temp:http"] = client

    def add_to_cart(ctx: InvocationContext) -> None:
        ctx.session.state["cart"].append("extra")

    general = Says(name="general", see=lambda ctx: ctx.session.state["cart"])
    agent = routed(
        {"flaky": Fails(name="flaky", act=add_to_cart), "general": general},
        in_order(["flaky", "general"]),
        before_agent_callback=put_client,
    )
    runner = make_runner(agent)
    session_id = await session_with(runner, {"cart": ["book"]})

    events, _ = await run_agent(agent, "hi", runner=runner, session_id=session_id)
    await client.aclose()

    assert answers(events) == ["['book']"]


# 8. Artifacts ------------------------------------------------------------------------------------------


def save_draft(text: str) -> Any:
    async def save(callback_context: CallbackContext) -> None:
        await callback_context.save_artifact("draft.txt", types.Part(text=text))

    return save


async def load_draft(ctx: InvocationContext) -> str | None:
    part = await ctx.artifact_service.load_artifact(
        app_name=ctx.app_name, user_id=ctx.user_id, session_id=ctx.session.id, filename="draft.txt"
    )
    return None if part is None else part.text


class LoadsDraft(BaseAgent):
    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        yield Event(author=self.name, content=types.ModelContent(str(await load_draft(ctx))))


async def test_an_artifact_a_failed_attempt_created_is_deleted() -> None:
    flaky = llm_agent("flaky", ConnectionError("down"), before_agent_callback=save_draft("bad draft"))
    agent = routed({"flaky": flaky, "general": LoadsDraft(name="general")}, in_order(["flaky", "general"]))

    events, _ = await run_agent(agent, "hi")

    assert answers(events) == ["None"]


async def test_a_version_a_failed_attempt_added_is_superseded_by_the_version_before_it() -> None:
    flaky = llm_agent("flaky", ConnectionError("down"), before_agent_callback=save_draft("bad draft"))
    agent = routed(
        {"flaky": flaky, "general": LoadsDraft(name="general")},
        in_order(["flaky", "general"]),
        before_agent_callback=save_draft("good draft"),
    )
    runner = make_runner(agent)
    session_id = await session_with(runner, {})

    events, _ = await run_agent(agent, "hi", runner=runner, session_id=session_id)

    where = {"app_name": "test_app", "user_id": "user", "session_id": session_id, "filename": "draft.txt"}
    failed = await runner.artifact_service.load_artifact(**where, version=1)
    assert answers(events) == ["good draft"]
    assert await runner.artifact_service.list_versions(**where) == [0, 1, 2]
    assert failed is not None
    assert failed.text == "bad draft"


# 9. Error events ---------------------------------------------------------------------------------------


async def test_a_transient_error_event_fails_over_to_the_next_agent() -> None:
    exhausted = LlmResponse(error_code="RESOURCE_EXHAUSTED", error_message="quota")
    agent = routed(
        {"primary": llm_agent("primary", exhausted), "general": llm_agent("general", "Hello!")},
        FallbackStrategy(["primary", "general"]),
    )

    events, _ = await run_agent(agent, "hi")

    assert answers(events) == ["Hello!"]
    assert events[-1].custom_metadata[RECORD]["failed_keys"] == ["primary"]


async def test_a_refusal_event_is_output_as_it_is_without_failing_over() -> None:
    refusal = LlmResponse(error_code="SAFETY", finish_reason=types.FinishReason.SAFETY)
    general = llm_agent("general", "Hello!")
    agent = routed(
        {"primary": llm_agent("primary", refusal), "general": general},
        FallbackStrategy(["primary", "general"]),
    )

    events, _ = await run_agent(agent, "hi")

    assert [event.error_code for event in events] == ["SAFETY"]
    assert events[0].custom_metadata[RECORD]["key"] == "primary"
    assert general.model.calls == []


async def test_when_no_agent_serves_the_last_error_event_is_output_marked_rejected_its_state_undone() -> None:
    def remember(callback_context: CallbackContext) -> None:
        callback_context.state["plan"] = "gold"

    exhausted = LlmResponse(error_code="RESOURCE_EXHAUSTED", error_message="quota")
    primary = llm_agent("primary", exhausted, before_agent_callback=remember)
    agent = routed({"primary": primary}, FallbackStrategy(["primary"]))
    runner = make_runner(agent)
    session_id = await session_with(runner, {})

    events, _ = await run_agent(agent, "hi", runner=runner, session_id=session_id)

    stored = await stored_session(runner, session_id)
    assert [event.error_code for event in events] == ["RESOURCE_EXHAUSTED"]
    assert "RESOURCE_EXHAUSTED" in events[0].custom_metadata[RECORD]["rejected"]
    assert events[0].custom_metadata[RECORD]["agent"] == "primary"
    assert "plan" not in stored.state


# 10. Time limits and health ------------------------------------------------------------------------------


async def test_a_hung_agent_costs_its_first_response_timeout_then_fails_over() -> None:
    agent = routed(
        {
            "slow": LlmAgent(name="slow", model=Hangs(model="hangs")),
            "general": llm_agent("general", "Hello!"),
        },
        in_order(["slow", "general"]),
        first_response_timeout={"slow": 0.01},
    )

    events, _ = await run_agent(agent, "hi")

    assert answers(events) == ["Hello!"]
    assert events[-1].custom_metadata[RECORD]["errors"] == {"slow": "AttemptTimeout"}


async def test_the_deadline_ends_a_turn_whose_agents_all_hang() -> None:
    agent = routed(
        {"slow": LlmAgent(name="slow", model=Hangs(model="hangs"))}, in_order(["slow"]), deadline=0.01
    )

    with pytest.raises(DeadlineExceeded):
        await run_agent(agent, "hi")


async def test_a_failed_agent_is_skipped_by_the_health_tracker_on_the_next_turn() -> None:
    health = HealthTracker(failure_threshold=1, cooldown=60, clock=lambda: 0.0)
    flaky = llm_agent("flaky", ConnectionError("down"))
    agent = routed(
        {"flaky": flaky, "general": llm_agent("general", "one", "two")},
        FallbackStrategy(["flaky", "general"]),
        health=health,
    )
    runner = make_runner(agent)
    session_id = await session_with(runner, {})

    await run_agent(agent, "hi", runner=runner, session_id=session_id)
    events, _ = await run_agent(agent, "again", runner=runner, session_id=session_id)

    assert answers(events) == ["two"]
    assert len(flaky.model.calls) == 1
    assert not health.is_available("flaky")


def test_time_limits_are_checked_at_construction() -> None:
    with pytest.raises(ValueError, match="first_response_timeout"):
        routed({"a": llm_agent("a", "x")}, in_order(["a"]), first_response_timeout=0)
    with pytest.raises(TypeError, match="health"):
        routed({"a": llm_agent("a", "x")}, in_order(["a"]), health="yes")


# Docs: tool errors, after_agent_callback ------------------------------------------------------------------


async def test_a_tool_error_after_the_function_call_event_propagates_without_failover() -> None:
    def lookup(order_id: str) -> str:
        """Looks an order up."""
        raise LookupError(order_id)

    call = types.Part(function_call=types.FunctionCall(name="lookup", args={"order_id": "7"}))
    general = llm_agent("general", "Hello!")
    agent = routed(
        {"tools": llm_agent("tools", call, tools=[lookup]), "general": general},
        in_order(["tools", "general"]),
    )

    with pytest.raises(LookupError):
        await run_agent(agent, "hi")
    assert general.model.calls == []


async def test_an_event_from_the_routed_agents_after_agent_callback_carries_the_route() -> None:
    def sign_off(callback_context: CallbackContext) -> types.Content:
        return types.ModelContent("Bye.")

    agent = routed(
        {"general": llm_agent("general", "Hello!")}, in_order(["general"]), after_agent_callback=sign_off
    )

    events, _ = await run_agent(agent, "hi")

    assert answers(events) == ["Hello!", "Bye."]
    assert events[-1].custom_metadata[RECORD]["key"] == "general"


# On ADK's SqliteSessionService -------------------------------------------------------------------------


async def test_on_sqlite_a_failed_attempts_writes_are_undone_and_a_pipeline_sees_held_state(
    tmp_path: Path,
) -> None:
    pipeline = SequentialAgent(
        name="pipeline", sub_agents=[Classify(name="classify"), echo_agent("answer", "Topic: {topic}")]
    )

    def write(ctx: InvocationContext) -> None:
        ctx.session.state["plan"] = "gold"
        ctx.session.state["items"].append("extra")

    agent = routed(
        {"flaky": Fails(name="flaky", act=write), "pipeline": pipeline}, in_order(["flaky", "pipeline"])
    )
    runner = sqlite_runner(agent, tmp_path)
    session_id = await session_with(runner, {"plan": "basic", "items": []})

    events, _ = await run_agent(agent, "hi", runner=runner, session_id=session_id)

    stored = await runner.session_service.get_session(
        app_name="test_app", user_id="user", session_id=session_id
    )
    assert answers(events) == ["Topic: refunds"]
    assert stored is not None
    assert {key: stored.state[key] for key in ("plan", "items", "topic")} == {
        "plan": "basic",
        "items": [],
        "topic": "refunds",
    }


# What is undone, sentence by sentence (docs/routing-between-agents.md) ----------------------------------


async def test_writes_and_in_place_edits_through_callback_context_state_are_undone() -> None:
    def edit(callback_context: CallbackContext, llm_request: LlmRequest) -> None:
        callback_context.state["plan"] = "gold"
        callback_context.state["cart"].append("extra")
        callback_context.state["profile"]["tier"] = "gold"

    flaky = llm_agent("flaky", ConnectionError("down"), before_model_callback=edit)
    general = Says(name="general", see=lambda ctx: [ctx.session.state.get("plan"), ctx.session.state["cart"]])
    agent = routed({"flaky": flaky, "general": general}, in_order(["flaky", "general"]))
    runner = make_runner(agent)
    session_id = await session_with(runner, {"cart": ["book"], "profile": {"tier": "basic"}})

    events, _ = await run_agent(agent, "こんにちは", runner=runner, session_id=session_id)

    stored = await runner.session_service.get_session(
        app_name="test_app", user_id="user", session_id=session_id
    )
    assert answers(events) == ["[None, ['book']]"]
    assert stored is not None
    assert stored.state == {"cart": ["book"], "profile": {"tier": "basic"}}


class Note(BaseModel):
    text: str
    tags: list[str]


async def test_in_place_edits_inside_a_pydantic_model_value_are_undone_and_it_keeps_its_identity() -> None:
    note = Note(text="draft", tags=["a"])
    seen: list[object] = []

    def put_note(callback_context: CallbackContext) -> None:
        callback_context.state["temp:note"] = note

    def edit(ctx: InvocationContext) -> None:
        value = ctx.session.state["temp:note"]
        value.text = "changed"
        value.tags.append("b")

    general = Says(name="general", see=lambda ctx: seen.append(ctx.session.state["temp:note"]))
    agent = routed(
        {"flaky": Fails(name="flaky", act=edit), "general": general},
        in_order(["flaky", "general"]),
        before_agent_callback=put_note,
    )

    await run_agent(agent, "hi")

    assert seen == [note]
    assert seen[0] is note
    assert note == Note(text="draft", tags=["a"])


async def test_in_place_edits_inside_other_objects_are_not_undone() -> None:
    budget = Budget()

    def put_budget(callback_context: CallbackContext) -> None:
        callback_context.state["temp:budget"] = budget
        callback_context.state["temp:embedding"] = np.zeros(2)

    def spend(ctx: InvocationContext) -> None:
        ctx.session.state["temp:budget"].spent += 1
        ctx.session.state["temp:embedding"][0] = 1.0

    general = Says(name="general", see=lambda ctx: ctx.session.state["temp:embedding"].tolist())
    agent = routed(
        {"flaky": Fails(name="flaky", act=spend), "general": general},
        in_order(["flaky", "general"]),
        before_agent_callback=put_budget,
    )

    events, _ = await run_agent(agent, "hi")

    assert budget.spent == 1
    assert answers(events) == ["[1.0, 0.0]"]


@WORKFLOW_AGENTS_DEPRECATED
async def test_what_every_branch_of_a_routed_parallel_agent_wrote_is_undone_when_it_fails() -> None:
    wrote = asyncio.Event()

    class Writes(BaseAgent):
        async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
            ctx.session.state["temp:branch"] = "written"
            ctx.session.state["notes"].append("branch")
            wrote.set()
            yield Event(author=self.name, actions=EventActions(state_delta={"seen": True}))

    class FailsAfter(BaseAgent):
        async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
            await wrote.wait()
            raise ConnectionError("down")
            yield

    fan_out = ParallelAgent(name="fan_out", sub_agents=[Writes(name="writes"), FailsAfter(name="fails")])
    general = Says(name="general", see=lambda ctx: sorted(ctx.session.state))
    agent = routed({"fan_out": fan_out, "general": general}, in_order(["fan_out", "general"]))
    runner = make_runner(agent)
    session_id = await session_with(runner, {"notes": []})

    events, _ = await run_agent(agent, "hi", runner=runner, session_id=session_id)

    stored = await runner.session_service.get_session(
        app_name="test_app", user_id="user", session_id=session_id
    )
    assert answers(events) == ["['notes']"]
    assert stored is not None
    assert stored.state == {"notes": []}


async def test_concurrent_turns_of_two_sessions_roll_back_independently() -> None:
    def write(ctx: InvocationContext) -> None:
        ctx.session.state["owner"] = ctx.session.id

    general = Says(name="general", see=lambda ctx: ctx.session.state.get("owner"))
    agent = routed(
        {"flaky": Fails(name="flaky", act=write), "general": general}, in_order(["flaky", "general"])
    )
    runner = make_runner(agent)
    first, second = await session_with(runner, {}), await session_with(runner, {})

    results = await asyncio.gather(
        run_agent(agent, "hi", runner=runner, session_id=first),
        run_agent(agent, "hi", runner=runner, session_id=second),
    )

    assert [answers(events) for events, _ in results] == [["None"], ["None"]]


async def test_a_callback_that_raises_before_the_first_output_fails_over() -> None:
    def refuse(callback_context: CallbackContext, llm_request: LlmRequest) -> None:
        raise ConnectionError("the gateway is down")

    flaky = llm_agent("flaky", "never", before_model_callback=refuse)
    agent = routed(
        {"flaky": flaky, "general": llm_agent("general", "Hello!")}, in_order(["flaky", "general"])
    )

    events, _ = await run_agent(agent, "hi")

    assert answers(events) == ["Hello!"]
    assert events[-1].custom_metadata[RECORD]["errors"] == {"flaky": "ConnectionError"}


async def test_an_edit_inside_a_value_reached_by_iterating_the_state_is_not_undone() -> None:
    def edit(ctx: InvocationContext) -> None:
        for value in ctx.session.state.values():
            value.append("extra")

    general = Says(name="general", see=lambda ctx: ctx.session.state["cart"])
    agent = routed(
        {"flaky": Fails(name="flaky", act=edit), "general": general}, in_order(["flaky", "general"])
    )
    runner = make_runner(agent)
    session_id = await session_with(runner, {"cart": ["book"]})

    events, _ = await run_agent(agent, "hi", runner=runner, session_id=session_id)

    assert answers(events) == ["['book', 'extra']"]


async def test_what_the_router_writes_between_attempts_is_not_undone() -> None:
    def router(agents: Any, ctx: InvocationContext, error: Any) -> str:
        if error is None:
            ctx.session.state["temp:routed_at"] = "first pick"
            return "flaky"
        return "general"

    general = Says(name="general", see=lambda ctx: ctx.session.state.get("temp:routed_at"))
    agent = routed({"flaky": Fails(name="flaky"), "general": general}, router)

    events, _ = await run_agent(agent, "hi")

    assert answers(events) == ["first pick"]


async def test_copies_of_the_session_state_taken_during_an_attempt_are_plain_dicts() -> None:
    general = Says(
        name="general",
        see=lambda ctx: [
            type(made).__name__
            for made in (
                copy.copy(ctx.session.state),
                copy.deepcopy(ctx.session.state),
                pickle.loads(pickle.dumps(ctx.session.state)),
            )
        ],
    )
    agent = routed({"general": general}, in_order(["general"]))
    runner = make_runner(agent)
    session_id = await session_with(runner, {"plan": "basic"})

    events, _ = await run_agent(agent, "hi", runner=runner, session_id=session_id)

    assert answers(events) == ["['dict', 'dict', 'dict']"]


@WORKFLOW_AGENTS_DEPRECATED
async def test_what_a_routed_agent_inside_a_failed_attempt_wrote_is_undone_with_it() -> None:
    class WritesQuietly(BaseAgent):
        async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
            ctx.session.state["inner"] = "written"
            yield Event(author=self.name, actions=EventActions(state_delta={"delta": "held"}))

    def write(ctx: InvocationContext) -> None:
        ctx.session.state["failed_inner"] = "written"

    inner = RoutedAgent(
        name="inner",
        agents={"flaky": Fails(name="flaky", act=write), "quiet": WritesQuietly(name="quiet")},
        router=in_order(["flaky", "quiet"]),
    )
    pipeline = SequentialAgent(name="pipeline", sub_agents=[inner, Fails(name="last_step")])
    general = Says(name="general", see=lambda ctx: sorted(ctx.session.state))
    agent = routed({"pipeline": pipeline, "general": general}, in_order(["pipeline", "general"]))
    runner = make_runner(agent)
    session_id = await session_with(runner, {"kept": 1})

    events, _ = await run_agent(agent, "hi", runner=runner, session_id=session_id)

    assert answers(events) == ["['kept']"]


async def test_a_key_the_failed_attempt_replaced_gets_back_the_very_object_it_held() -> None:
    budget = Budget()
    seen: list[object] = []

    def put_budget(callback_context: CallbackContext) -> None:
        callback_context.state["temp:budget"] = budget

    def replace(ctx: InvocationContext) -> None:
        ctx.session.state["temp:budget"] = Budget()

    general = Says(name="general", see=lambda ctx: seen.append(ctx.session.state["temp:budget"]))
    agent = routed(
        {"flaky": Fails(name="flaky", act=replace), "general": general},
        in_order(["flaky", "general"]),
        before_agent_callback=put_budget,
    )

    await run_agent(agent, "hi")

    assert seen[0] is budget


@WORKFLOW_AGENTS_DEPRECATED
async def test_a_later_step_that_overwrote_a_held_key_keeps_its_value_after_the_commit() -> None:
    class Overwrites(BaseAgent):
        async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
            ctx.session.state["topic"] = "billing"
            yield Event(author=self.name, content=types.ModelContent("noted"))

    pipeline = SequentialAgent(
        name="pipeline",
        sub_agents=[
            Classify(name="classify"),
            Overwrites(name="overwrites"),
            echo_agent("answer", "Topic: {topic}"),
        ],
    )

    unrouted, _ = await run_agent(pipeline.clone(), "hi")
    routed_events, _ = await run_agent(routed({"pipeline": pipeline}, in_order(["pipeline"])), "hi")

    assert answers(unrouted)[-1] == "Topic: billing"
    assert answers(routed_events)[-1] == "Topic: billing"


@WORKFLOW_AGENTS_DEPRECATED
@pytest.mark.parametrize("first_to_fail", ["first", "second"])
async def test_two_parallel_routed_agents_that_both_fail_over_after_writing_one_key_leave_it_as_it_was(
    first_to_fail: str,
) -> None:
    first_wrote, both_wrote, one_failed = asyncio.Event(), asyncio.Event(), asyncio.Event()

    class WritesThenFails(BaseAgent):
        async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
            if self.name == "second_writer":
                await first_wrote.wait()
            ctx.session.state["status"] = self.name
            (both_wrote if self.name == "second_writer" else first_wrote).set()
            await both_wrote.wait()
            if not self.name.startswith(first_to_fail):
                await one_failed.wait()
            one_failed.set()
            raise ConnectionError("down")
            yield

    def arm(name: str) -> RoutedAgent:
        writer, fallback = (
            WritesThenFails(name=f"{name}_writer"),
            Says(name=f"{name}_fallback", see=lambda ctx: "ok"),
        )
        return RoutedAgent(
            name=name, agents=[writer, fallback], router=in_order([writer.name, fallback.name])
        )

    root = SequentialAgent(
        name="root",
        sub_agents=[
            ParallelAgent(name="fan_out", sub_agents=[arm("first"), arm("second")]),
            Says(name="reader", see=lambda ctx: ctx.session.state.get("status")),
        ],
    )
    runner = make_runner(root)
    session_id = await session_with(runner, {"status": "new"})

    events, _ = await run_agent(root, "hi", runner=runner, session_id=session_id)

    assert answers(events)[-1] == "new"


@WORKFLOW_AGENTS_DEPRECATED
async def test_a_key_a_parallel_sibling_committed_after_the_attempt_wrote_it_keeps_the_siblings_value() -> (
    None
):
    attempt_wrote, committed = asyncio.Event(), asyncio.Event()

    class Sibling(BaseAgent):
        async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
            await attempt_wrote.wait()
            yield Event(
                author=self.name,
                content=types.ModelContent("noted"),
                actions=EventActions(state_delta={"shared": "sibling"}),
            )
            committed.set()

    class WritesThenFails(BaseAgent):
        async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
            ctx.session.state["shared"] = "attempt"
            attempt_wrote.set()
            await committed.wait()
            raise ConnectionError("down")
            yield

    support = routed(
        {"flaky": WritesThenFails(name="flaky"), "general": Says(name="general", see=lambda ctx: "G")},
        in_order(["flaky", "general"]),
    )
    root = SequentialAgent(
        name="root",
        sub_agents=[
            ParallelAgent(name="both", sub_agents=[Sibling(name="sibling"), support]),
            Says(name="reader", see=lambda ctx: ctx.session.state.get("shared")),
        ],
    )

    events, _ = await run_agent(root, "hi")

    assert answers(events)[-1] == "sibling"


class Tagged(BaseModel):
    tags: list[str]
    extra: Any = None


async def test_a_pydantic_value_holding_an_array_in_an_unset_field_is_rolled_back() -> None:
    tagged = Tagged.model_construct(_fields_set={"tags"}, tags=["a"], extra=np.ones(3))

    def put(callback_context: CallbackContext) -> None:
        callback_context.state["temp:tagged"] = tagged

    general = Says(name="general", see=lambda ctx: ctx.session.state["temp:tagged"].tags)
    flaky = Fails(name="flaky", act=lambda ctx: ctx.session.state["temp:tagged"].tags.append("b"))
    agent = routed(
        {"flaky": flaky, "general": general}, in_order(["flaky", "general"]), before_agent_callback=put
    )

    events, _ = await run_agent(agent, "hi")

    assert answers(events) == ["['a']"]


async def test_an_after_agent_callback_event_following_a_rejected_error_event_is_not_marked_rejected() -> (
    None
):
    def sign_off(callback_context: CallbackContext) -> types.Content:
        return types.ModelContent("Sorry.")

    refusal = LlmResponse(error_code="SAFETY", finish_reason=types.FinishReason.SAFETY)
    agent = routed(
        {"primary": llm_agent("primary", refusal)},
        FallbackStrategy(["primary"]),
        after_agent_callback=sign_off,
    )

    events, _ = await run_agent(agent, "hi")

    assert "rejected" in events[0].custom_metadata[RECORD]
    assert events[-1].custom_metadata[RECORD]["key"] == "primary"
    assert "rejected" not in events[-1].custom_metadata[RECORD]

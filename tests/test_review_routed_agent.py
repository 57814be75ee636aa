"""An adversarial review of RoutedAgent's rollback: what the docs promise, tried through real ADK runners."""

from __future__ import annotations

import asyncio
from collections import OrderedDict, defaultdict
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from conftest import in_order, make_runner, run_agent, texts
from google.adk.agents import BaseAgent, LlmAgent
from google.adk.agents.callback_context import CallbackContext
from google.adk.agents.invocation_context import InvocationContext
from google.adk.agents.live_request_queue import LiveRequestQueue
from google.adk.apps import App
from google.adk.artifacts import InMemoryArtifactService
from google.adk.events import Event
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions import InMemorySessionService
from google.genai import types

from routed_llm import DeadlineExceeded, RoutedAgent

RECORD = "routed_agent"


class Hangs(BaseLlm):
    """A model that waits for an event nobody sets."""

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        await asyncio.Event().wait()
        yield LlmResponse()


class Says(BaseAgent):
    """Answers with ``see(ctx)``, in ``run_async`` and ``run_live``."""

    see: Any = None

    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        yield Event(author=self.name, content=types.ModelContent(str(self.see(ctx))))

    async def _run_live_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        yield Event(author=self.name, content=types.ModelContent(str(self.see(ctx))))


class Guard(BaseAgent):
    """Runs its one sub-agent, and if the sub-agent raises, answers with the state's ``draft``.

    With ``within`` set, the sub-agent's run is cancelled after that many seconds.
    """

    within: float | None = None

    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        events: list[Event] = []
        try:
            async with asyncio.timeout(self.within):
                events += [event async for event in self.sub_agents[0].run_async(ctx)]
        except (DeadlineExceeded, TimeoutError):
            events.append(
                Event(author=self.name, content=types.ModelContent(repr(ctx.session.state.get("draft"))))
            )
        for event in events:
            yield event


def write_draft(callback_context: CallbackContext) -> None:
    callback_context.state["draft"] = "half-written"


def hung_writer() -> LlmAgent:
    """An agent that writes ``draft`` to the state, then waits for a model that never answers."""
    return LlmAgent(name="writer", model=Hangs(model="hangs"), before_agent_callback=write_draft)


def answers(events: list[Event]) -> list[str]:
    return texts([event for event in events if not event.partial])


# The deadline and cancellation -------------------------------------------------------------------


async def test_what_an_attempt_wrote_is_undone_when_the_deadline_ends_it() -> None:
    routed = RoutedAgent(
        name="support", agents={"writer": hung_writer()}, router=in_order(["writer"]), deadline=0.01
    )

    events, _ = await run_agent(Guard(name="guard", sub_agents=[routed]), "hi")

    assert answers(events) == ["None"]


async def test_what_a_cancelled_attempt_wrote_is_undone() -> None:
    routed = RoutedAgent(name="support", agents={"writer": hung_writer()}, router=in_order(["writer"]))

    events, _ = await run_agent(Guard(name="guard", sub_agents=[routed], within=0.01), "hi")

    assert answers(events) == ["None"]


# Live ----------------------------------------------------------------------------------------------


async def test_an_event_from_the_routed_agents_after_agent_callback_carries_the_route_in_run_live() -> None:
    def sign_off(callback_context: CallbackContext) -> types.Content:
        return types.ModelContent("Bye.")

    routed = RoutedAgent(
        name="support",
        agents={"general": Says(name="general", see=lambda ctx: "Hello!")},
        router=in_order(["general"]),
        after_agent_callback=sign_off,
    )
    runner = make_runner(routed)
    session = await runner.session_service.create_session(app_name="test_app", user_id="user")
    queue = LiveRequestQueue()
    queue.close()

    events = [
        event
        async for event in runner.run_live(user_id="user", session_id=session.id, live_request_queue=queue)
    ]

    assert answers(events) == ["Hello!", "Bye."]
    assert events[-1].custom_metadata[RECORD]["key"] == "general"


# In-place edits --------------------------------------------------------------------------------------


class Fails(BaseAgent):
    """Raises ConnectionError after running ``act`` on its context, before any event."""

    act: Any = None

    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        self.act(ctx)
        raise ConnectionError("down")
        yield


async def test_an_edit_of_an_object_held_under_two_keys_is_undone_whichever_key_was_read_last() -> None:
    def cancel_then_list(ctx: InvocationContext) -> None:
        ctx.session.state["current"]["status"] = "cancelled"
        assert ctx.session.state["orders"]

    general = Says(name="general", see=lambda ctx: ctx.session.state["orders"][0]["status"])
    agent = RoutedAgent(
        name="support",
        agents={"flaky": Fails(name="flaky", act=cancel_then_list), "general": general},
        router=in_order(["flaky", "general"]),
    )
    runner = make_runner(agent)
    order = {"status": "open"}
    session = await runner.session_service.create_session(
        app_name="test_app", user_id="user", state={"current": order, "orders": [order]}
    )

    events, _ = await run_agent(agent, "hi", runner=runner, session_id=session.id)

    assert answers(events) == ["open"]


class Basket(list[str]):
    """A list subclass."""


@pytest.mark.parametrize(
    ("make", "edit"),
    [
        (lambda: {"book"}, lambda value: value.add("pen")),
        (lambda: (["book"],), lambda value: value[0].append("pen")),
        (lambda: defaultdict(list, {"items": ["book"]}), lambda value: value["extra"].append("pen")),
        (lambda: OrderedDict(items=["book"]), lambda value: value.move_to_end("items") or value.pop("items")),
        (lambda: Basket(["book"]), lambda value: value.append("pen")),
    ],
    ids=["set", "list-in-tuple", "defaultdict", "OrderedDict", "list-subclass"],
)
async def test_an_edit_inside_a_set_tuple_or_dict_or_list_subclass_the_attempt_read_is_undone(
    make: Any, edit: Any
) -> None:
    value = make()
    before = repr(value)

    def put(callback_context: CallbackContext) -> None:
        callback_context.state["temp:value"] = value

    general = Says(name="general", see=lambda ctx: repr(ctx.session.state["temp:value"]))
    agent = RoutedAgent(
        name="support",
        agents={
            "flaky": Fails(name="flaky", act=lambda ctx: edit(ctx.session.state["temp:value"])),
            "general": general,
        },
        router=in_order(["flaky", "general"]),
        before_agent_callback=put,
    )

    events, _ = await run_agent(agent, "hi")

    assert answers(events) == [before]
    assert repr(value) == before


class ReadOnlyDict(dict[str, Any]):
    """A dict subclass that refuses every edit, as some libraries' immutable mappings do."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("ReadOnlyDict is immutable")

    __setitem__ = __delitem__ = clear = update = pop = popitem = setdefault = _refuse  # type: ignore[assignment]


async def test_a_read_only_dict_subclass_the_attempt_read_does_not_break_failover() -> None:
    settings = ReadOnlyDict({"tier": "gold"})

    def put(callback_context: CallbackContext) -> None:
        callback_context.state["temp:settings"] = settings

    def read_settings(ctx: InvocationContext) -> None:
        assert ctx.session.state["temp:settings"]["tier"] == "gold"

    agent = RoutedAgent(
        name="support",
        agents={
            "flaky": Fails(name="flaky", act=read_settings),
            "general": Says(name="general", see=lambda ctx: ctx.session.state["temp:settings"]["tier"]),
        },
        router=in_order(["flaky", "general"]),
        before_agent_callback=put,
    )

    events, _ = await run_agent(agent, "hi")

    assert answers(events) == ["gold"]


# Artifacts -------------------------------------------------------------------------------------------


async def test_an_artifact_a_failed_attempt_deleted_is_saved_again_as_it_was() -> None:
    async def delete_draft(callback_context: CallbackContext) -> None:
        ctx = callback_context._invocation_context
        await ctx.artifact_service.delete_artifact(
            app_name=ctx.app_name, user_id=ctx.user_id, session_id=ctx.session.id, filename="draft.txt"
        )

    class LoadsDraft(BaseAgent):
        async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
            part = await ctx.artifact_service.load_artifact(
                app_name=ctx.app_name, user_id=ctx.user_id, session_id=ctx.session.id, filename="draft.txt"
            )
            yield Event(author=self.name, content=types.ModelContent(str(part and part.text)))

    flaky = LlmAgent(name="flaky", model=Hangs(model="h"), before_agent_callback=delete_draft)
    agent = RoutedAgent(
        name="support",
        agents={"flaky": flaky, "general": LoadsDraft(name="general")},
        router=in_order(["flaky", "general"]),
        first_response_timeout={"flaky": 0.01},
    )
    runner = make_runner(agent)
    session = await runner.session_service.create_session(app_name="test_app", user_id="user")
    await runner.artifact_service.save_artifact(
        app_name="test_app",
        user_id="user",
        session_id=session.id,
        filename="draft.txt",
        artifact=types.Part(text="good draft"),
    )

    events, _ = await run_agent(agent, "hi", runner=runner, session_id=session.id)

    versions = await runner.artifact_service.list_versions(
        app_name="test_app", user_id="user", session_id=session.id, filename="draft.txt"
    )
    assert answers(events) == ["good draft"]
    assert versions == [0]


async def test_an_artifact_saved_by_an_attempt_that_is_cancelled_is_deleted() -> None:
    async def save_draft(callback_context: CallbackContext) -> None:
        await callback_context.save_artifact("draft.txt", types.Part(text="half-written"))

    writer = LlmAgent(name="writer", model=Hangs(model="hangs"), before_agent_callback=save_draft)
    agent = RoutedAgent(name="support", agents={"writer": writer}, router=in_order(["writer"]))
    runner = make_runner(agent)
    session = await runner.session_service.create_session(app_name="test_app", user_id="user")

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await run_agent(agent, "hi", runner=runner, session_id=session.id)

    keys = await runner.artifact_service.list_artifact_keys(
        app_name="test_app", user_id="user", session_id=session.id
    )
    assert keys == []


async def test_the_version_put_back_over_a_failed_attempts_version_keeps_its_custom_metadata() -> None:
    async def save_draft(callback_context: CallbackContext) -> None:
        await callback_context.save_artifact("draft.txt", types.Part(text="bad draft"))

    flaky = LlmAgent(name="flaky", model=Hangs(model="hangs"), before_agent_callback=save_draft)
    agent = RoutedAgent(
        name="support",
        agents={"flaky": flaky, "general": Says(name="general", see=lambda ctx: "Hello!")},
        router=in_order(["flaky", "general"]),
        first_response_timeout={"flaky": 0.01},
    )
    runner = make_runner(agent)
    session = await runner.session_service.create_session(app_name="test_app", user_id="user")
    where = {"app_name": "test_app", "user_id": "user", "session_id": session.id, "filename": "draft.txt"}
    await runner.artifact_service.save_artifact(
        **where, artifact=types.Part(text="good draft"), custom_metadata={"author": "alice"}
    )

    await run_agent(agent, "hi", runner=runner, session_id=session.id)

    latest = await runner.artifact_service.get_artifact_version(**where)
    assert latest is not None
    assert latest.custom_metadata == {"author": "alice"}


class DeleteFails(InMemoryArtifactService):
    """An artifact service whose deletes fail."""

    async def delete_artifact(self, **where: Any) -> None:
        raise ConnectionError("artifact store down")


async def test_a_cancelled_attempt_still_raises_the_cancellation_when_deleting_its_artifacts_fails() -> None:
    async def save_draft(callback_context: CallbackContext) -> None:
        await callback_context.save_artifact("draft.txt", types.Part(text="half-written"))

    writer = LlmAgent(name="writer", model=Hangs(model="hangs"), before_agent_callback=save_draft)
    agent = RoutedAgent(name="support", agents={"writer": writer}, router=in_order(["writer"]))
    runner = Runner(
        app=App(name="test_app", root_agent=agent),
        session_service=InMemorySessionService(),
        artifact_service=DeleteFails(),
    )
    session = await runner.session_service.create_session(app_name="test_app", user_id="user")

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await run_agent(agent, "hi", runner=runner, session_id=session.id)

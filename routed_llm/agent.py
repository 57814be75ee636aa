"""``RoutedAgent``: one ADK agent that routes each invocation to one of several agents."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing
from types import MappingProxyType
from typing import Any, TypeAlias

from google.adk.agents.base_agent import BaseAgent
from google.adk.agents.invocation_context import InvocationContext
from google.adk.events.event import Event
from pydantic import ConfigDict, PrivateAttr
from typing_extensions import override

from routed_llm import observability
from routed_llm.health import HealthTracker
from routed_llm.observability import FailoverHook, RouteHook
from routed_llm.routing import ErrorContext, RoutedCall, RouterSettings, check_callables, check_router
from routed_llm.session_rollback import Attempt, RecordingArtifacts, own_keys, tracked
from routed_llm.timeouts import check_seconds, per_key_seconds

__all__ = ["METADATA_KEY", "AgentRouter", "RoutedAgent"]

logger = logging.getLogger(__name__)

METADATA_KEY = "routed_agent"
"""The key under which each event's ``custom_metadata`` records its route."""

AgentRouter: TypeAlias = Callable[
    [Mapping[str, BaseAgent], InvocationContext, ErrorContext | None],
    str | Awaitable[str | None] | None,
]
"""A function that picks which agent serves an invocation.

It receives the routed agents by key, ADK's ``InvocationContext`` (the
session, its state, the user's message in ``user_content``), and ``None`` on
the first pick or an :class:`~routed_llm.ErrorContext` after a failure. It
returns a key, or ``None`` to choose nothing, with the same meaning as for
:data:`~routed_llm.LlmRouter`. It may be a plain or an ``async`` function.
Every strategy in :mod:`routed_llm.strategies` is one.
"""


class RoutedAgent(BaseAgent):
    """An agent that asks a router which of several agents runs each invocation.

    Use it where the instruction, the tools or the sub-agents change between
    routes, not only the model (for that, :class:`~routed_llm.RoutedLlm` is
    enough)::

        support = RoutedAgent(
            name="support",
            agents={"billing": billing_agent, "general": general_agent},
            router=WithFallback(
                PreRoutingStrategy(lambda ctx: "billing" if "invoice" in ctx.input_text else None),
                fallback_order=["general"],
            ),
        )

    Each invocation (each user turn) asks the router for a key and runs that
    agent, passing its events through as they come. If the agent fails
    before showing anything (it raises, runs out of time, or yields an
    error event that RoutedLlm's policy fails over on), what it wrote or
    edited in the session state is undone, the artifacts it created are
    deleted (and those it deleted saved again), and the router is asked
    again with an :class:`~routed_llm.ErrorContext`; each key runs at most
    once per invocation. Events that only carry bookkeeping (a state delta, a
    checkpoint) are held until the first output, their state delta applied
    meanwhile, so the agent's next steps see it. Once the agent has shown
    something (content, a function call, an error) the invocation belongs
    to it and a later error propagates. The rules are
    :class:`~routed_llm.RoutedLlm`'s, from the same code; what is undone is
    listed in ``docs/routing-between-agents.md``.

    Every event the chosen agent or its descendants yield is a copy that
    records the route in ``custom_metadata["routed_agent"]``: the router's
    name, the key, the agent's name, the keys that failed and their error
    types, the attempts and any route annotations. A ``routed_llm`` record
    from a routed model inside is kept beside it; a routed agent inside
    keeps its own record under ``"inner"``.

    The routed agents become this agent's ``sub_agents``, so
    ``find_agent`` finds them and ``adk web`` draws them. A function call
    one of them made (a long-running tool, a confirmation) is answered by
    ADK's runner straight to that agent, without asking the router.

    Args:
        name: The agent's name, a Python identifier unique in the agent tree.
        agents: The agents to route between: a mapping of key to agent, or a
            sequence of agents keyed by each agent's name. None may already
            have a parent agent.
        router: Picks the key for each invocation; see :data:`AgentRouter`.
            Sync or async.
        description: What the agent does, for an LLM agent deciding whether
            to transfer to it.
        on_route: Called, sync or async, with a
            :class:`~routed_llm.RouteEvent` before every attempt (its
            ``model`` is the agent's name).
        on_failover: Called, sync or async, with a
            :class:`~routed_llm.FailoverEvent` after every attempt that fails
            before its first event. A hook that raises is logged and ignored.
        clock: Seconds from a monotonic clock, for the events' ``elapsed``.
        first_response_timeout: Seconds each agent has to show its first
            output (content, a function call, an error), for every key or
            as ``{key: seconds}``; past it the attempt is cancelled and
            fails over with :class:`~routed_llm.AttemptTimeout`.
        deadline: Seconds the whole invocation may wait for a first output,
            every attempt together; past it,
            :class:`~routed_llm.DeadlineExceeded`.
        health: A :class:`~routed_llm.HealthTracker` told of every attempt;
            strategies skip the agents it says are unavailable.
        **agent_fields: Other ``BaseAgent`` fields, such as
            ``before_agent_callback`` and ``after_agent_callback``.

    Raises:
        ValueError: If ``agents`` is empty, a name appears twice anywhere in
            the routed agents' trees (or is this agent's own), an agent
            already has a parent, ``router`` declares keys that are not in
            ``agents``, or a time limit is not a positive number.
        TypeError: If an entry is not a ``BaseAgent``, a key is not a
            non-empty string, ``router`` or a hook is not callable, a time
            limit is not a number, or ``health`` is not a ``HealthTracker``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    _keys: tuple[str, ...] = PrivateAttr()
    _settings: RouterSettings = PrivateAttr()

    def __init__(
        self,
        *,
        name: str,
        agents: Mapping[str, BaseAgent] | Sequence[BaseAgent],
        router: AgentRouter,
        description: str = "",
        on_route: RouteHook | None = None,
        on_failover: FailoverHook | None = None,
        clock: Callable[[], float] = time.perf_counter,
        first_response_timeout: float | Mapping[str, float] | None = None,
        deadline: float | None = None,
        health: HealthTracker | None = None,
        **agent_fields: Any,
    ) -> None:
        if "sub_agents" in agent_fields:
            raise TypeError("RoutedAgent takes its sub-agents as agents=..., not sub_agents=....")
        resolved = _resolve_agents(agents)
        clash = next((key for key, agent in resolved.items() if agent.name == name), None)
        if clash is not None:
            raise ValueError(
                f"RoutedAgent(agents=...): the agent under {clash!r} is named {name!r}, like the RoutedAgent "
                "itself. Agent names are unique in an agent tree: rename one of them."
            )
        check_router(
            router,
            resolved,
            owner="RoutedAgent",
            signature="router(agents, invocation_context, error_context)",
        )
        check_callables("RoutedAgent", on_route=on_route, on_failover=on_failover, clock=clock)
        if health is not None and not isinstance(health, HealthTracker):
            raise TypeError(f"RoutedAgent(health=...) takes a HealthTracker; got {type(health).__name__}.")
        if health is not None and health.store is not None:
            for key in resolved:
                health.store.check_key(key)
        _check_unique_names(name, resolved.values())
        super().__init__(
            name=name, description=description, sub_agents=list(resolved.values()), **agent_fields
        )
        self._keys = tuple(resolved)
        self._settings = RouterSettings(
            models=MappingProxyType(resolved),
            router=router,
            on_route=on_route,
            on_failover=on_failover,
            clock=clock,
            first_response_timeout=per_key_seconds(
                "RoutedAgent", "first_response_timeout", first_response_timeout, resolved
            ),
            deadline=check_seconds("RoutedAgent", "deadline", deadline),
            health=health,
            label="agent",
        )

    @property
    def agents(self) -> Mapping[str, BaseAgent]:
        """The routed agents by key (read-only)."""
        return MappingProxyType(dict(zip(self._keys, self.sub_agents, strict=True)))

    @override
    def clone(self, update: Mapping[str, Any] | None = None) -> RoutedAgent:
        """A copy of this agent and of the agents it routes (ADK's ``BaseAgent.clone``).

        Raises:
            ValueError: If ``update`` replaces ``sub_agents``: build a new
                ``RoutedAgent`` with other agents instead.
        """
        if update is not None and "sub_agents" in update:
            raise ValueError(
                "RoutedAgent.clone(update={'sub_agents': ...}) cannot pair new agents with the router's "
                "keys; build a new RoutedAgent(agents=...) instead."
            )
        return super().clone(update)

    @property
    def router(self) -> AgentRouter:
        """The router that picks a key for each invocation."""
        router: AgentRouter = self._settings.router
        return router

    @override
    async def _run_with_lifecycle(
        self,
        parent_context: InvocationContext,
        impl_fn: Callable[[InvocationContext], AsyncGenerator[Event, None]],
    ) -> AsyncGenerator[Event, None]:
        """Runs the invocation with ADK's callbacks, for ``run_async`` and ``run_live`` alike.

        Events of this agent's own ``after_agent_callback`` carry the route
        record of the agent that served, like every event before them.
        (``run_live`` is final in ADK, so both are stamped here.)
        """
        async with aclosing(super()._run_with_lifecycle(parent_context, impl_fn)) as events:
            async for event in self._stamp_own(events):
                yield event

    async def _stamp_own(self, events: AsyncIterator[Event]) -> AsyncGenerator[Event, None]:
        """Gives this agent's own events after a routed one (its ``after_agent_callback``'s) that route."""
        route: dict[str, Any] | None = None
        async for event in events:
            record = (event.custom_metadata or {}).get(METADATA_KEY)
            if record is not None:
                route = {name: value for name, value in record.items() if name not in _NOT_INHERITED}
            elif route is not None and event.author == self.name:
                event = RoutedCall.stamp(event, route, METADATA_KEY)
            yield event

    @override
    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        async for event in self._route(ctx, lambda agent, attempt_ctx: agent.run_async(attempt_ctx)):
            yield event

    @override
    async def _run_live_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        async for event in self._route(ctx, lambda agent, attempt_ctx: agent.run_live(attempt_ctx)):
            yield event

    async def _route(
        self,
        ctx: InvocationContext,
        run: Callable[[BaseAgent, InvocationContext], AsyncGenerator[Event, None]],
    ) -> AsyncGenerator[Event, None]:
        """Runs the router's pick, failing over while it has shown nothing."""
        # Read the agents and the name off this object, not stored copies: ADK
        # may run a clone of this agent, whose sub-agents are clones too.
        rollback = _Rollback(ctx, self)
        settings = dataclasses.replace(
            self._settings,
            models=self.agents,
            record=MappingProxyType({"router": self.name}),
            snapshot=lambda _ctx: rollback,
        )
        call = RoutedCall(settings, ctx)
        try:
            key = await call.first_key()
            while True:
                attempt_ctx = rollback.begin()
                events = run(settings.models[key], attempt_ctx)
                held: list[Event] = []
                try:
                    try:
                        event = await rollback.run(call.first_response(key, _until_output(events, held, ctx)))
                        if event is not None and call.holding:  # An error event: ResponseRejected.
                            await call.held_output(key, event, _no_events())
                    except Exception as error:
                        await events.aclose()
                        await rollback.undo_artifacts()
                        if error is not call.deadline_error:
                            try:
                                key = await call.fail_over(key, error)
                                continue
                            except Exception as final:
                                error = final
                        rejected = call.rejected_output(error, METADATA_KEY)
                        if rejected is None:
                            raise error
                        for response in rejected:
                            yield response  # type: ignore[misc]  # Events in, events out.
                        return
                    except asyncio.CancelledError:
                        # Not a failure (nothing fails over), but nothing of the attempt is kept:
                        # its state is undone on release, its artifacts here.
                        await events.aclose()
                        try:
                            await rollback.undo_artifacts()
                        except Exception:  # The cancellation goes on; it is what the caller awaits.
                            logger.warning(
                                "Could not undo the artifacts of a cancelled attempt of %r.",
                                key,
                                exc_info=True,
                            )
                        raise
                    rollback.commit()
                    if event is None:
                        return
                    route = call.route_metadata(key)
                    observability.record_served(route)
                    if held:
                        # The runner applies the held deltas again as it stores them; a later
                        # step may have written those keys since, and its values stand.
                        state = ctx.session.state
                        live = {
                            key: state.get(key, _ABSENT) for done in held for key in done.actions.state_delta
                        }
                        for bookkeeping in held:
                            yield call.stamp(bookkeeping, route, METADATA_KEY)
                        _put_back(state, live)
                    yield call.stamp(event, route, METADATA_KEY)
                    async for event in events:
                        yield call.stamp(event, route, METADATA_KEY)
                    return
                finally:
                    await events.aclose()
        finally:
            call.release()


_ABSENT: Any = object()
# Entries of a served event's record that do not describe the agent's own later events.
_NOT_INHERITED = frozenset({"inner", "rejected"})


def _put_back(state: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Sets each key of ``state`` back to the very object in ``values``, or removes it if ``_ABSENT``."""
    for key, value in values.items():
        if value is _ABSENT:
            state.pop(key, None)
        elif state.get(key, _ABSENT) is not value:
            state[key] = value


async def _no_events() -> AsyncGenerator[Event, None]:
    """No further events: an error event is judged alone, and the attempt is closed."""
    return
    yield


async def _until_output(
    events: AsyncIterator[Event], held: list[Event], ctx: InvocationContext
) -> AsyncGenerator[Event, None]:
    """Yields the first event of ``events`` that shows something, holding back those before it.

    Events that only record bookkeeping (a state delta, a workflow agent's
    checkpoint, an end-of-agent marker) show the user nothing, so the attempt
    may still fail over after them: they go to ``held``, to be passed on
    before the first output, or dropped with the attempt. While held, a
    state delta is applied to the session's state as the runner applies it
    (``temp:`` keys included), so the agent's next steps see it; the
    attempt's rollback undoes it. An agent that ends with bookkeeping alone
    has its last such event taken as its output.
    """
    async for event in events:
        if _shows_something(event):
            yield event
            return
        held.append(event)
        if not event.partial and event.actions.state_delta:
            state = ctx.session.state
            for key, value in event.actions.state_delta.items():
                state[key] = value
    if held:
        yield held.pop()


def _shows_something(event: Event) -> bool:
    """Whether ``event`` carries content, an error or a transcription, not only actions."""
    return bool(
        (event.content is not None and event.content.parts)
        or event.error_code is not None
        or event.input_transcription is not None
        or event.output_transcription is not None
    )


def record_resumed(ctx: InvocationContext, event: Event) -> Event | None:
    """Records the route on an event of a routed agent that ADK's runner ran directly.

    An answered function call goes straight to the agent that made it, not
    through its :class:`RoutedAgent`. Its events then get the route record
    of the event that made the call, marked ``"resumed": True``.
    :class:`~routed_llm.RoutingPlugin` calls this for every event.

    Returns:
        A stamped copy of ``event``, or None when it needs no record (it has
        one, or the invocation answers no routed agent's function call).
    """
    if (event.custom_metadata and METADATA_KEY in event.custom_metadata) or isinstance(
        ctx.agent, RoutedAgent
    ):
        return None
    parts = ctx.user_content.parts if ctx.user_content is not None else None
    answered = {part.function_response.id for part in parts or () if part.function_response}
    answered.discard(None)
    if not answered:
        return None
    for past in reversed(ctx.session.events):
        if any(call.id in answered for call in past.get_function_calls()):
            record = (past.custom_metadata or {}).get(METADATA_KEY)
            return RoutedCall.stamp(event, {**record, "resumed": True}, METADATA_KEY) if record else None
    return None


class _Rollback:
    """Undoes, for one invocation, what each failed attempt wrote to the session and its artifacts.

    Each attempt runs with an :class:`~routed_llm.session_rollback.Attempt`
    that records the state keys it reads and writes (see
    :mod:`routed_llm.session_rollback`), and with an artifact service that
    records what it saves. The agent states of this router's own agents
    (ADK's checkpoints of workflow agents) are restored too; they are kept
    per agent, a few entries.
    """

    __slots__ = ("_artifacts", "_attempt", "_ctx", "_own_agents", "_saved_agents")

    def __init__(self, ctx: InvocationContext, agent: BaseAgent) -> None:
        self._ctx = ctx
        ctx.session.state = tracked(ctx.session.state)
        self._own_agents = _subtree_names(agent) - {agent.name}
        self._saved_agents: tuple[dict[str, Any], dict[str, Any]] = (
            dict(ctx.agent_states),
            dict(ctx.end_of_agents),
        )
        self._attempt: Attempt | None = None
        self._artifacts: RecordingArtifacts | None = None

    def begin(self) -> InvocationContext:
        """Starts recording a new attempt.

        Returns:
            The context the attempt runs with: the invocation's, with an
            artifact service that records what the attempt saves.
        """
        state = self._ctx.session.state
        self._attempt = Attempt(tracked(state))
        service = self._ctx.artifact_service
        if service is None:
            return self._ctx
        self._artifacts = RecordingArtifacts(service)
        return self._ctx.model_copy(update={"artifact_service": self._artifacts})

    async def run(self, attempt: Awaitable[Event | None]) -> Event | None:
        """Awaits ``attempt`` (its first output) with the attempt's reads and writes recorded."""
        assert self._attempt is not None  # begin() came first.
        with self._attempt.running():
            return await attempt

    def commit(self) -> None:
        """The attempt serves: stops recording, and keeps everything it did."""
        if self._attempt is not None:
            self._attempt.end()
        if self._artifacts is not None:
            self._artifacts.stop()

    async def undo_artifacts(self) -> None:
        """Deletes the artifacts the failed attempt saved (see ``RecordingArtifacts.undo``)."""
        if self._artifacts is not None:
            await self._artifacts.undo()

    def restore(self) -> None:
        """Undoes the failed attempt's state changes, and its own agents' states."""
        if self._attempt is not None:
            self._attempt.undo()
        current: tuple[dict[str, Any], dict[str, Any]] = (self._ctx.agent_states, self._ctx.end_of_agents)
        for values, saved in zip(current, self._saved_agents, strict=True):
            for key in own_keys([*values, *saved], self._own_agents):
                if key not in saved:
                    values.pop(key, None)
                elif values.get(key) is not saved[key]:
                    values[key] = saved[key]


def _subtree_names(agent: BaseAgent) -> set[str]:
    """The names of ``agent`` and every agent below it."""
    names = {agent.name}
    for child in agent.sub_agents:
        names |= _subtree_names(child)
    return names


def _check_unique_names(name: str, agents: Iterable[BaseAgent]) -> None:
    """Refuses a name that appears twice in the routed agents' trees, or is the RoutedAgent's own.

    Raises:
        ValueError: Naming both paths, from the RoutedAgent down.
    """
    paths: dict[str, str] = {name: name}
    pending = [(agent, f"{name}/{agent.name}") for agent in agents]
    while pending:
        agent, path = pending.pop(0)
        if agent.name in paths:
            raise ValueError(
                f"RoutedAgent(agents=...): the name {agent.name!r} is used twice, at {paths[agent.name]} and "
                f"{path}. ADK finds agents, and sends the answer to a function call, by name: give each "
                "agent its own name, e.g. agent.clone(update={'name': ...})."
            )
        paths[agent.name] = path
        pending += [(child, f"{path}/{child.name}") for child in agent.sub_agents]


def _resolve_agents(agents: Mapping[str, BaseAgent] | Sequence[BaseAgent]) -> dict[str, BaseAgent]:
    """Checks ``agents`` and turns it into a dict of key to agent."""
    if isinstance(agents, (str, bytes)) or not isinstance(agents, (Mapping, Sequence)):
        raise TypeError(
            "RoutedAgent(agents=...) takes a mapping of key to agent, or a sequence of agents; "
            f"got {type(agents).__name__}."
        )
    entries: list[tuple[object, object]] = (
        list(agents.items())
        if isinstance(agents, Mapping)
        else [(getattr(agent, "name", None), agent) for agent in agents]
    )
    if not entries:
        raise ValueError("RoutedAgent(agents=...) is empty; give it at least one agent to route to.")
    resolved: dict[str, BaseAgent] = {}
    names: dict[str, str] = {}
    for key, agent in entries:
        if not isinstance(agent, BaseAgent):
            raise TypeError(
                f"RoutedAgent(agents=...): the entry for {key!r} is a {type(agent).__name__}; "
                "each entry is an ADK agent (a BaseAgent such as LlmAgent or SequentialAgent)."
            )
        if not isinstance(key, str) or not key:
            raise TypeError(f"RoutedAgent(agents=...) keys are non-empty strings; got {key!r}.")
        if key in resolved:
            raise ValueError(
                f"RoutedAgent(agents=[...]) names the agent {key!r} twice, and a sequence is keyed by "
                "agent name. Give each agent a distinct name."
            )
        if agent.name in names:
            raise ValueError(
                f"RoutedAgent(agents=...): keys {names[agent.name]!r} and {key!r} hold agents both named "
                f"{agent.name!r}. Agent names are unique in an agent tree (find_agent and the events' "
                "authors use them): give each its own name, or clone one with "
                "agent.clone(update={'name': ...})."
            )
        if agent.parent_agent is not None:
            raise ValueError(
                f"RoutedAgent(agents=...): the agent {agent.name!r} (key {key!r}) already belongs to "
                f"{agent.parent_agent.name!r}; an ADK agent has one parent. Pass a copy made with "
                "agent.clone(), or take it out of the other agent's sub_agents."
            )
        names[agent.name] = key
        resolved[key] = agent
    return resolved

"""``RoutedAgent``: one ADK agent that routes each invocation to one of several agents."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeAlias, TypeVar

from google.adk.agents.base_agent import BaseAgent
from google.adk.agents.invocation_context import InvocationContext
from google.adk.events.event import Event
from pydantic import ConfigDict, PrivateAttr
from typing_extensions import override

from routed_llm import observability
from routed_llm.observability import FailoverHook, RouteHook
from routed_llm.routing import ErrorContext, RoutedCall, RouterSettings, check_callables, check_router

__all__ = ["METADATA_KEY", "AgentRouter", "RoutedAgent"]

_V = TypeVar("_V")

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
    agent, passing its events through as they come. If the agent raises
    before yielding any event, whatever it changed in the session state is
    undone and the router is asked again with an
    :class:`~routed_llm.ErrorContext`; each key runs at most once per
    invocation. Once the agent has yielded an event the invocation belongs
    to it and a later error propagates. The rules are
    :class:`~routed_llm.RoutedLlm`'s, from the same code.

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
        **agent_fields: Other ``BaseAgent`` fields, such as
            ``before_agent_callback`` and ``after_agent_callback``.

    Raises:
        ValueError: If ``agents`` is empty, names an agent twice, holds an
            agent that already has a parent, or ``router`` declares keys that
            are not in ``agents``.
        TypeError: If an entry is not a ``BaseAgent``, a key is not a
            non-empty string, or ``router`` or a hook is not callable.
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
            snapshot=_SessionSnapshot.take,
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
    async def _run_async_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        async for event in self._route(ctx, lambda agent: agent.run_async(ctx)):
            yield event

    @override
    async def _run_live_impl(self, ctx: InvocationContext) -> AsyncGenerator[Event, None]:
        async for event in self._route(ctx, lambda agent: agent.run_live(ctx)):
            yield event

    async def _route(
        self, ctx: InvocationContext, run: Callable[[BaseAgent], AsyncGenerator[Event, None]]
    ) -> AsyncGenerator[Event, None]:
        """Runs the router's pick, failing over while it has shown nothing."""
        # Read the agents and the name off this object, not stored copies: ADK
        # may run a clone of this agent, whose sub-agents are clones too.
        settings = dataclasses.replace(
            self._settings, models=self.agents, record=MappingProxyType({"router": self.name})
        )
        call = RoutedCall(settings, ctx)
        try:
            key = await call.first_key()
            while True:
                events = run(settings.models[key])
                held: list[Event] = []
                try:
                    try:
                        event = await call.first_response(key, _until_output(events, held))
                    except Exception as error:
                        await events.aclose()
                        key = await call.fail_over(key, error)
                        continue
                    if event is None:
                        return
                    route = call.route_metadata(key)
                    observability.record_served(route)
                    for bookkeeping in held:
                        yield call.stamp(bookkeeping, route, METADATA_KEY)
                    yield call.stamp(event, route, METADATA_KEY)
                    async for event in events:
                        yield call.stamp(event, route, METADATA_KEY)
                    return
                finally:
                    await events.aclose()
        finally:
            call.release()


async def _until_output(events: AsyncIterator[Event], held: list[Event]) -> AsyncGenerator[Event, None]:
    """Yields the first event of ``events`` that shows something, holding back those before it.

    Events that only record bookkeeping (a state delta, a workflow agent's
    checkpoint, an end-of-agent marker) show the user nothing, so the attempt
    may still fail over after them: they go to ``held``, to be passed on
    before the first output, or dropped with the attempt. An agent that ends
    with bookkeeping alone has its last such event taken as its output.
    """
    async for event in events:
        if _shows_something(event):
            yield event
            return
        held.append(event)
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


class _SessionSnapshot:
    """The session state and agent states of an invocation, to undo a failed attempt.

    ADK writes state changes straight into the session's state (and records
    them as a delta on the next event), so an agent that changed state and
    then failed before showing anything would leave its changes to the next
    agent. Values are deep-copied, so changes made inside a nested value are
    undone too. Only what the attempt could have changed is undone: state
    keys that events appended meanwhile committed (a parallel sibling's,
    say) are left as they are, and agent states only of this router's own
    agents.
    """

    __slots__ = ("_ctx", "_events", "_own_agents", "_saved")

    def __init__(self, ctx: InvocationContext) -> None:
        self._ctx = ctx
        self._events = len(ctx.session.events)
        agent = ctx.agent
        self._own_agents = _subtree_names(agent) - {agent.name} if isinstance(agent, BaseAgent) else set()
        self._saved = tuple(_deep_copy(dict(values)) for values in self._mappings())

    @classmethod
    def take(cls, ctx: InvocationContext) -> _SessionSnapshot:
        """Records ``ctx``'s session state as it is now."""
        return cls(ctx)

    def restore(self) -> None:
        """Puts back, in place, what changed since the snapshot and nobody committed."""
        events = self._ctx.session.events[self._events :]
        committed = {key for event in events for key in event.actions.state_delta}
        state, agent_states, end_of_agents = self._mappings()
        saved_state, saved_agent_states, saved_end_of_agents = self._saved
        _undo(state, saved_state, keep=lambda key: key in committed)
        # Agent states are keyed by agent name, or by node path ending in "name@run".
        not_own = lambda key: key.split("/")[-1].rsplit("@", 1)[0] not in self._own_agents  # noqa: E731
        _undo(agent_states, saved_agent_states, keep=not_own)
        _undo(end_of_agents, saved_end_of_agents, keep=not_own)

    def _mappings(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        return (self._ctx.session.state, self._ctx.agent_states, self._ctx.end_of_agents)


def _undo(values: dict[str, Any], saved: dict[str, Any], *, keep: Callable[[str], bool]) -> None:
    """Puts ``values`` back to ``saved`` in place, but for the keys ``keep`` keeps."""
    for key in set(values) | set(saved):
        if keep(key):
            continue
        if key not in saved:
            del values[key]
        elif key not in values or values[key] != saved[key]:
            values[key] = _deep_copy(saved[key])


def _subtree_names(agent: BaseAgent) -> set[str]:
    """The names of ``agent`` and every agent below it."""
    names = {agent.name}
    for child in agent.sub_agents:
        names |= _subtree_names(child)
    return names


def _deep_copy(value: _V) -> _V:
    """A deep copy of ``value``, or ``value`` itself if it cannot be copied."""
    try:
        return copy.deepcopy(value)
    except Exception:  # A value that refuses copying (a lock, a client) is kept as it is.
        return value


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

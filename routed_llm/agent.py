"""``RoutedAgent``: one ADK agent that routes each invocation to one of several agents."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypeAlias

from google.adk.agents.base_agent import BaseAgent
from google.adk.agents.invocation_context import InvocationContext
from google.adk.events.event import Event
from pydantic import ConfigDict, PrivateAttr
from typing_extensions import override

from routed_llm import observability
from routed_llm.observability import FailoverHook, RouteHook
from routed_llm.routing import ErrorContext, RoutedCall, RouterSettings, check_router

__all__ = ["METADATA_KEY", "AgentRouter", "RoutedAgent"]

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
                tail=FallbackStrategy(["general"]),
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
    ) -> None:
        resolved = _resolve_agents(agents)
        check_router(
            router,
            resolved,
            owner="RoutedAgent",
            signature="router(agents, invocation_context, error_context)",
        )
        for hook_name, hook in (("on_route", on_route), ("on_failover", on_failover), ("clock", clock)):
            if hook is not None and not callable(hook):
                raise TypeError(f"RoutedAgent({hook_name}=...) must be callable; got {type(hook).__name__}.")
        super().__init__(name=name, description=description, sub_agents=list(resolved.values()))
        self._keys = tuple(resolved)
        self._settings = RouterSettings(
            models=MappingProxyType(resolved),
            router=router,
            on_route=on_route,
            on_failover=on_failover,
            clock=clock,
            snapshot=_SessionSnapshot.take,
            label="agent",
            record=MappingProxyType({"router": name}),
        )

    @property
    def agents(self) -> Mapping[str, BaseAgent]:
        """The routed agents by key (read-only)."""
        return MappingProxyType(dict(zip(self._keys, self.sub_agents, strict=True)))

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
        """Runs the router's pick, failing over while no event was yielded."""
        # Read the agents off sub_agents, not a stored mapping: ADK may run a
        # clone of this agent, whose sub-agents are clones too.
        settings = dataclasses.replace(self._settings, models=self.agents)
        call = RoutedCall(settings, ctx)
        try:
            key = await call.first_key()
            while True:
                events = run(settings.models[key])
                try:
                    try:
                        event = await call.first_response(key, events)
                    except Exception as error:
                        await events.aclose()
                        key = await call.fail_over(key, error)
                        continue
                    if event is None:
                        return
                    route = call.route_metadata(key)
                    observability.record_served(route)
                    yield call.stamp(event, route, METADATA_KEY)
                    async for event in events:
                        yield call.stamp(event, route, METADATA_KEY)
                    return
                finally:
                    await events.aclose()
        finally:
            call.release()


def record_resumed(ctx: InvocationContext, event: Event) -> Event | None:
    """Records the route on an event of a routed agent that ADK's runner ran directly.

    An answered function call goes straight to the agent that made it, not
    through its :class:`RoutedAgent`. Its events then get the record of the
    latest routed turn of the outermost ``RoutedAgent`` above it, marked
    ``"resumed": True``. :class:`~routed_llm.RoutingPlugin` calls this for
    every event.

    Returns:
        A stamped copy of ``event``, or None when it needs no record (it has
        one, or no ``RoutedAgent`` is above the agent that ran).
    """
    if event.custom_metadata and METADATA_KEY in event.custom_metadata:
        return None
    router: RoutedAgent | None = None
    agent: BaseAgent | None = ctx.agent if isinstance(ctx.agent, BaseAgent) else None
    while agent is not None:
        if isinstance(agent, RoutedAgent):
            router = agent
        agent = agent.parent_agent
    if router is None:
        return None
    for past in reversed(ctx.session.events):
        record = (past.custom_metadata or {}).get(METADATA_KEY)
        if isinstance(record, dict) and record.get("router") == router.name:
            return RoutedCall.stamp(event, {**record, "resumed": True}, METADATA_KEY)
    return None


class _SessionSnapshot:
    """The session state and agent states of an invocation, to undo a failed attempt.

    ADK writes state changes straight into the session's state (and records
    them as a delta on the next event), so an agent that changed state and
    then failed before yielding would leave its changes to the next agent.
    """

    __slots__ = ("_agent_states", "_ctx", "_end_of_agents", "_state")

    def __init__(self, ctx: InvocationContext) -> None:
        self._ctx = ctx
        self._state = dict(ctx.session.state)
        self._agent_states = dict(ctx.agent_states)
        self._end_of_agents = dict(ctx.end_of_agents)

    @classmethod
    def take(cls, ctx: InvocationContext) -> _SessionSnapshot:
        """Records ``ctx``'s session state as it is now."""
        return cls(ctx)

    def restore(self) -> None:
        """Puts the session state back as it was when taken, in place."""
        pairs: tuple[tuple[dict[str, Any], dict[str, Any]], ...] = (
            (self._ctx.session.state, self._state),
            (self._ctx.agent_states, self._agent_states),
            (self._ctx.end_of_agents, self._end_of_agents),
        )
        for current, saved in pairs:
            if current != saved:
                current.clear()
                current.update(saved)


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

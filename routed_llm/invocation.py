"""Who is asking: the ADK invocation behind a model call, for routers to read.

In ADK a model receives only the ``LlmRequest``, which says nothing about the
user or the session. :class:`RoutingPlugin` closes that gap: registered on
the runner, it captures the invocation before each model call into a context
variable, where :func:`current_invocation` (and
:attr:`~routed_llm.strategies.RoutingContext.invocation`) reads it::

    runner = InMemoryRunner(app=App(name="app", root_agent=agent, plugins=[RoutingPlugin()]))

    def router(models, llm_request, error_context):
        invocation = current_invocation()
        if invocation and invocation.state.get("tier") == "premium":
            return "pro"
        return "flash"

Context variables are per asyncio task, so concurrent sessions and parallel
agents on one event loop each see their own invocation. Outside ADK, or
without the plugin, :func:`current_invocation` returns None, and a strategy
that reads :attr:`~routed_llm.strategies.RoutingContext.invocation` then gets
a warning naming the fix (once per place that reads it, by Python's default
warning filter). An agent can capture without a plugin through its own
callback: ``LlmAgent(..., before_model_callback=capture_invocation)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from google.adk.agents.callback_context import CallbackContext
from google.adk.agents.invocation_context import InvocationContext
from google.adk.events.event import Event
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.plugins.base_plugin import BasePlugin
from typing_extensions import override

from routed_llm.agent import record_resumed
from routed_llm.signatures import remember_session_events

__all__ = ["InvocationInfo", "RoutingPlugin", "capture_invocation", "current_invocation", "invocation_scope"]


@dataclass(frozen=True)
class InvocationInfo:
    """The ADK invocation a model call belongs to.

    Attributes:
        app_name: The app the runner serves.
        user_id: The user the session belongs to.
        session_id: The session's id.
        invocation_id: The invocation's id (one user turn and all its model
            and tool calls).
        agent_name: The agent making the model call.
        state: A read-only view of the session state.
    """

    app_name: str
    user_id: str
    session_id: str
    invocation_id: str
    agent_name: str
    state: Mapping[str, Any]

    @classmethod
    def of(cls, callback_context: CallbackContext) -> InvocationInfo:
        """Reads the invocation off an ADK callback context."""
        session = callback_context.session
        return cls(
            app_name=session.app_name,
            user_id=callback_context.user_id,
            session_id=session.id,
            invocation_id=callback_context.invocation_id,
            agent_name=callback_context.agent_name,
            state=MappingProxyType(session.state),
        )


# Unset until something captures an invocation; set to None, it reports none on purpose.
_current: ContextVar[InvocationInfo | None] = ContextVar("routed_llm_invocation")

_NOT_CAPTURED = (
    "ctx.invocation is None: no ADK invocation was captured for this model call, so routing on who "
    "is asking (user, session, state, A/B arms) falls back to defaults. Register the plugin on the "
    "app: App(plugins=[RoutingPlugin()]) (or give the agent before_model_callback=capture_invocation; "
    "outside ADK, wrap the call in invocation_scope(...))."
)
"""The warning a strategy gets when it reads the invocation and none was captured."""


def current_invocation() -> InvocationInfo | None:
    """The invocation of the model call being routed, or None outside ADK.

    Returns:
        What :class:`RoutingPlugin` or :func:`capture_invocation` captured
        for the current task, or None if neither ran.
    """
    return _current.get(None)


def invocation_for_strategy() -> InvocationInfo | None:
    """:func:`current_invocation`, warning when nothing captured one.

    Reports the warning at the line that read
    :attr:`~routed_llm.strategies.RoutingContext.invocation` (two frames up),
    so Python's default filter shows it once per such line. An
    :func:`invocation_scope` set to None reports none without a warning.

    Returns:
        The captured invocation, or None.
    """
    try:
        return _current.get()
    except LookupError:
        warnings.warn(_NOT_CAPTURED, UserWarning, stacklevel=3)
        return None


@contextmanager
def invocation_scope(info: InvocationInfo | None) -> Iterator[None]:
    """Sets the invocation routers see, for code that calls models outside ADK.

    Args:
        info: The invocation to report, e.g. built from your own server's
            request; None to report none.

    Yields:
        Nothing; the previous invocation is restored on exit.
    """
    token = _current.set(info)
    try:
        yield
    finally:
        _current.reset(token)


def capture_invocation(callback_context: CallbackContext, llm_request: LlmRequest) -> LlmResponse | None:
    """An ADK ``before_model_callback`` that captures the invocation.

    Use it on agents run without :class:`RoutingPlugin`:
    ``LlmAgent(..., before_model_callback=capture_invocation)``.

    Args:
        callback_context: ADK's context for the model call.
        llm_request: The request (not read).

    Returns:
        None, so the model call goes ahead.
    """
    _current.set(InvocationInfo.of(callback_context))
    # The session's events say which routed key issued each thought signature.
    remember_session_events(callback_context.session.events)
    return None


class RoutingPlugin(BasePlugin):
    """An ADK plugin that tells routers who is asking.

    It also records the route on the events of a routed agent that ADK's
    runner resumes directly (an answered function call goes straight to the
    agent that made it, not through its :class:`~routed_llm.RoutedAgent`):
    they carry the route of the turn that made the call, marked
    ``"resumed": True``.

    Register it on the runner (or app): ``plugins=[RoutingPlugin()]``.

    Args:
        name: The plugin's name, unique among the runner's plugins.
    """

    def __init__(self, name: str = "routed_llm") -> None:
        super().__init__(name=name)

    @override
    async def before_model_callback(
        self, *, callback_context: CallbackContext, llm_request: LlmRequest
    ) -> LlmResponse | None:
        """Captures the invocation before each model call."""
        return capture_invocation(callback_context, llm_request)

    @override
    async def on_event_callback(self, *, invocation_context: InvocationContext, event: Event) -> Event | None:
        """Records the route on the events of a routed agent the runner resumed directly."""
        return record_resumed(invocation_context, event)

"""The strategy interface, the routing context, and the rules that compose strategies.

:class:`RoutingContext` is what a strategy decides on, :class:`Strategy` the
interface; :class:`PreRoutingStrategy` wraps a function of the context, and
:class:`FirstMatch` and :class:`WithFallback` compose strategies.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from google.adk.agents.callback_context import CallbackContext
from google.adk.agents.invocation_context import InvocationContext
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.genai import types

from routed_llm._text import instruction_text
from routed_llm.capabilities import unserved_need
from routed_llm.errors import is_transient
from routed_llm.invocation import InvocationInfo, invocation_for_strategy
from routed_llm.routing import (
    CONFINED_TO,
    ErrorContext,
    annotate_route,
    note_skipped,
    route_notes,
    soonest_available,
    unavailable_reason,
)

Decision = str | None
"""A key, or None (or ``""``) for no decision."""

TransientPolicy = Callable[[BaseException], bool]
"""Decides whether a failure may fall back; :func:`is_transient` by default."""


@dataclass(frozen=True)
class RoutingContext:
    """What a strategy decides on.

    A strategy routes a :class:`~routed_llm.RoutedLlm`'s model calls and a
    :class:`~routed_llm.RoutedAgent`'s invocations alike. Routing agents,
    there is no request yet (``request`` is None): :attr:`input_text` is the
    user's message for this invocation, :attr:`invocation` comes straight
    from ADK's invocation context, and ``models`` holds the agents.

    Attributes:
        request: The model request being routed, or None when routing agents.
            Read it; do not edit it.
        models: The routed models (or agents) by key.
        error_context: None on the first pick, else what failed so far.
        invocation_context: ADK's invocation context when routing agents,
            else None.
    """

    request: LlmRequest | None
    models: Mapping[str, Any]
    error_context: ErrorContext | None = None
    invocation_context: InvocationContext | None = None

    @property
    def is_failover(self) -> bool:
        """Whether a model already failed in this call."""
        return self.error_context is not None

    @property
    def failed_keys(self) -> frozenset[str]:
        """The keys that failed so far in this call (empty on the first pick)."""
        return self.error_context.failed_keys if self.error_context else frozenset()

    @cached_property
    def input_text(self) -> str:
        """The text of the request's contents, the turns the model will read.

        Text parts of every content (user and model turns alike) joined by
        newlines; thoughts, function calls and responses and media are not
        text and are left out. The system instruction is not included: see
        :attr:`system_instruction_text`. Routing agents, the text of the
        user's message for this invocation.
        """
        return "\n".join(
            part.text
            for content in self.contents
            for part in content.parts or ()
            if part.text and not part.thought
        )

    @property
    def contents(self) -> list[types.Content]:
        """The request's contents; routing agents, the user's message alone (if any)."""
        if self.request is not None:
            return self.request.contents
        user_content = self.invocation_context.user_content if self.invocation_context else None
        return [user_content] if user_content is not None else []

    @property
    def invocation(self) -> InvocationInfo | None:
        """Who is asking: user, session, invocation, agent, app and state.

        Routing a model, set when the runner has a
        :class:`~routed_llm.RoutingPlugin` (or the agent uses
        :func:`~routed_llm.capture_invocation`), None otherwise, with a
        ``UserWarning`` naming the fix: ``App(plugins=[RoutingPlugin()])``.
        Routing agents, always set, from the invocation context.
        """
        if self.invocation_context is not None:
            return InvocationInfo.of(CallbackContext(self.invocation_context))
        return invocation_for_strategy()

    def is_available(self, key: str) -> bool:
        """Whether ``key`` may be tried now for this request; :meth:`unavailable_reason` says why not.

        False while the key's model cannot serve the request (it needs a
        Gemini built-in tool, an output schema with tools, or a context
        window the model lacks), while the key's circuit is open
        (:class:`~routed_llm.HealthTracker`), while its half-open trial is in
        flight, and while its budget for the current minute is spent
        (:class:`~routed_llm.RateLimits`). Every built-in strategy skips
        unavailable keys, and when every candidate is unavailable tries the
        one whose cooldown ends soonest, among the keys whose model can
        serve the request.
        """
        return self.unavailable_reason(key) is None

    def unavailable_reason(self, key: str) -> str | None:
        """Why ``key`` may not be tried now for this request; None when it may.

        First, whether the key's model can serve the request at all: not
        when the request carries a Gemini built-in tool and the model is not
        a Gemini model, has an output schema with tools and the model's
        ``capabilities.output_schema_and_tools`` is False, or is over the
        context window the model declares (``context_window``, as
        :class:`~routed_llm.ondevice.LlamaCppLlm` does; the input is
        measured with :func:`estimate_tokens`). Such a reason is recorded
        in the route record under ``skipped``, ``{key: reason}``. Then the
        key's health and rate budget.

        Args:
            key: A routed key.

        Returns:
            The reason, e.g. ``"the request carries the Gemini built-in tool
            google_search, and 'gpt-4o' is not a Gemini model"``, or None.
        """
        need = self._unserved_need(key)
        if need is not None:
            note_skipped(key, need)
            return need
        return unavailable_reason(key)

    def _unserved_need(self, key: str) -> str | None:
        """What the request needs that ``key``'s model lacks; None routing agents, or for a key not routed."""
        model = self.models.get(key)
        if self.request is None or not isinstance(model, BaseLlm):
            return None
        return unserved_need(model, self.request)

    def annotate(self, **values: str | int | float | bool) -> bool:
        """Records values with the route: see :func:`~routed_llm.annotate_route`."""
        return annotate_route(**values)

    def confine(self, key: str) -> bool:
        """Keeps the rest of this call on ``key``: no built-in strategy picks another key after it.

        For a decision no failure may undo, such as "this request is
        private, it stays on the device": after ``key`` fails, the tails of
        :class:`WithFallback` and :class:`FallbackStrategy` skip every other
        key, so the call ends with ``key``'s error. Recorded with the route as
        ``confined_to``. A router of your own that picks after a failure
        reads :attr:`confined_to` to do the same.

        Returns:
            True if recorded; False when no routing call is under way.
        """
        return annotate_route(confined_to=key)

    @property
    def confined_to(self) -> str | None:
        """The key an earlier decision in this call confined it to (:meth:`confine`), if any."""
        key = route_notes().get(CONFINED_TO)
        return key if isinstance(key, str) else None

    @property
    def input_chars(self) -> int:
        """The length of :attr:`input_text` in characters."""
        return len(self.input_text)

    @cached_property
    def system_instruction_text(self) -> str:
        """The text of the request's system instruction ("" when it has none, or routing agents)."""
        if self.request is None or self.request.config is None:
            return ""
        return instruction_text(self.request.config.system_instruction)


class Strategy(ABC):
    """The interface of a routing strategy; subclass it to write your own.

    Implement :meth:`decide`. The base class makes the strategy a router, so
    it can be passed as ``RoutedLlm(router=...)`` and composed with the
    built-in strategies::

        class PremiumToPro(Strategy):
            def decide(self, ctx):
                return "pro" if "premium" in ctx.input_text else None
    """

    @abstractmethod
    def decide(self, ctx: RoutingContext) -> Decision | Awaitable[Decision]:
        """Names the key to try, or None (or ``""``) for no decision.

        Args:
            ctx: The request and what failed so far.

        Returns:
            A key, or None; either may be returned through an awaitable.
        """

    @property
    def declared_keys(self) -> frozenset[str]:
        """The keys this strategy may name, where known ahead of time.

        ``RoutedLlm`` checks them against its models at construction, so a
        misspelled key fails there instead of on the first request. Empty
        when the strategy cannot know (a user function decides).
        """
        return frozenset()

    async def __call__(
        self,
        models: Mapping[str, Any],
        subject: LlmRequest | InvocationContext,
        error_context: ErrorContext | None,
    ) -> str | None:
        """Routes like any router: see :data:`~routed_llm.LlmRouter` and :data:`~routed_llm.AgentRouter`."""
        if isinstance(subject, InvocationContext):
            ctx = RoutingContext(None, models, error_context, invocation_context=subject)
        else:
            ctx = RoutingContext(subject, models, error_context)
        return await decide(self, ctx)


async def decide(strategy: Strategy, ctx: RoutingContext) -> Decision:
    """Asks ``strategy`` for a decision, awaiting it and folding ``""`` to None.

    Args:
        strategy: The strategy to ask.
        ctx: What it decides on.

    Returns:
        A key, or None for no decision.

    Raises:
        TypeError: If the strategy returns something other than a string or
            None.
    """
    choice = await _resolve(strategy.decide(ctx))
    if choice is None or choice == "":
        return None
    if not isinstance(choice, str):
        raise TypeError(
            f"{type(strategy).__name__}.decide returned {choice!r} ({type(choice).__name__}); "
            "a strategy returns a key string, or None/'' for no decision."
        )
    return choice


@dataclass(frozen=True)
class PreRoutingStrategy(Strategy):
    """Decides the first pick with your own function: privacy, cost, tier.

    Args:
        fn: ``fn(ctx)``, sync or async, returns a key, or ``""``/None for no
            decision. Not consulted after a failure.
    """

    fn: Callable[[RoutingContext], Decision | Awaitable[Decision]]

    def __post_init__(self) -> None:
        _require_callable("PreRoutingStrategy(fn)", self.fn)

    async def decide(self, ctx: RoutingContext) -> Decision:
        """Returns ``fn(ctx)`` on the first pick, None after a failure."""
        if ctx.is_failover:
            return None
        choice: Decision = await _resolve(self.fn(ctx))
        return choice


@dataclass(frozen=True)
class FirstMatch(Strategy):
    """A chain of rules: asks each strategy in turn, takes the first decision.

    Asked the same way on the first pick and after failures.

    Args:
        strategies: The strategies to ask, in order.
    """

    strategies: Sequence[Strategy]

    def __post_init__(self) -> None:
        strategies = tuple(self.strategies)
        if not strategies:
            raise ValueError("FirstMatch([...]) needs at least one strategy.")
        for index, strategy in enumerate(strategies):
            _require_strategy(
                f"FirstMatch([...])[{index}]",
                strategy,
                otherwise="Wrap a function of the context in PreRoutingStrategy(fn).",
            )
        object.__setattr__(self, "strategies", strategies)

    @property
    def declared_keys(self) -> frozenset[str]:
        """Every key any of the strategies declares."""
        return frozenset().union(*(strategy.declared_keys for strategy in self.strategies))

    async def decide(self, ctx: RoutingContext) -> Decision:
        """Returns the first decision any strategy makes, else None."""
        for strategy in self.strategies:
            choice = await decide(strategy, ctx)
            if choice is not None:
                return choice
        return None


@dataclass(frozen=True)
class WithFallback(Strategy):
    """Any strategy's pick, plus a guaranteed fallback tail.

    The first pick is the strategy's, or the first key of ``fallback_order``
    when it makes none. After a transient failure, the next key of
    ``fallback_order`` that has not failed; the wrapped strategy is not asked
    again. Only keys in the tail are ever tried after the first pick: with
    ``fallback_order=[ON_DEVICE]``, a request a privacy rule kept on-device
    never reaches the cloud, even when the device fails.

    Args:
        strategy: The strategy that makes the first pick.
        fallback_order: The keys to fall back to, in order.
        is_transient: Which failures may fall back.
    """

    strategy: Strategy
    fallback_order: Sequence[str] = field(kw_only=True)
    is_transient: TransientPolicy = field(default=is_transient, kw_only=True)

    def __post_init__(self) -> None:
        _require_strategy("WithFallback(strategy)", self.strategy)
        object.__setattr__(
            self, "fallback_order", _key_sequence("WithFallback(fallback_order=...)", self.fallback_order)
        )
        _require_callable("WithFallback(is_transient=...)", self.is_transient)

    @property
    def declared_keys(self) -> frozenset[str]:
        """The strategy's keys and the tail's."""
        return self.strategy.declared_keys | frozenset(self.fallback_order)

    async def decide(self, ctx: RoutingContext) -> Decision:
        """Returns the strategy's pick first, then the tail's next key."""
        if not ctx.is_failover:
            return await decide(self.strategy, ctx) or _next_in_order(
                self.fallback_order, ctx, self.is_transient
            )
        return _next_in_order(self.fallback_order, ctx, self.is_transient)


def _next_in_order(order: Sequence[str], ctx: RoutingContext, may_fall_back: TransientPolicy) -> Decision:
    """The first key of ``order`` not yet failed, if the last failure allows."""
    if ctx.error_context is not None and not may_fall_back(ctx.error_context.last_error):
        return None
    failed, confined = ctx.failed_keys, ctx.confined_to
    candidates = [key for key in order if key not in failed and confined in (None, key)]
    return next((key for key in candidates if ctx.is_available(key)), None) or soonest_available(
        [key for key in candidates if ctx._unserved_need(key) is None]
    )


def _available_or(pick: str, other: str, ctx: RoutingContext) -> str:
    """``pick``, unless it is unavailable and ``other`` is not, or only ``other`` can serve the request."""
    if ctx.is_available(pick):
        return pick
    if ctx.is_available(other) or (
        ctx._unserved_need(pick) is not None and ctx._unserved_need(other) is None
    ):
        return other
    return pick


async def _resolve(value: Any) -> Any:
    """Awaits ``value`` if it is awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value


def _require_strategy(what: str, value: object, *, otherwise: str = "") -> None:
    """Rejects anything but a Strategy instance, naming a Strategy class given in its place."""
    if isinstance(value, type) and issubclass(value, Strategy):
        raise TypeError(
            f"{what} got the class {value.__name__}; pass an instance, e.g. {value.__name__}(...)."
        )
    if not isinstance(value, Strategy):
        raise TypeError(f"{what} takes a Strategy; got {type(value).__name__}. {otherwise}".rstrip())


def _require_callable(what: str, value: object) -> None:
    if not callable(value):
        raise TypeError(f"{what} must be callable; got {type(value).__name__}.")


def _require_key(what: str, key: object) -> None:
    if not isinstance(key, str) or not key:
        raise TypeError(f"{what} is a non-empty key string; got {key!r}.")


def _key_sequence(what: str, keys: object) -> tuple[str, ...]:
    """Checks a non-empty sequence of distinct key strings; returns it as a tuple."""
    if isinstance(keys, str) or not isinstance(keys, Sequence):
        raise TypeError(f"{what} is a list of keys, e.g. ['primary', 'fallback']; got {keys!r}.")
    for key in keys:
        _require_key(what, key)
    if not keys:
        raise ValueError(f"{what} is empty; name at least one key.")
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(
            f"{what} names {duplicates} more than once; each key is tried at most once per call."
        )
    return tuple(keys)

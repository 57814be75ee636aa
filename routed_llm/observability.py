"""Seeing every routing decision: hook events, OpenTelemetry spans and metrics.

Only the OpenTelemetry *API* is used (an ADK dependency already): with no SDK
configured every call here is a cheap no-op. With one configured:

* the span current when the model is called (ADK's ``call_llm`` span) gets the
  attributes ``routed_llm.key``, ``routed_llm.model``,
  ``routed_llm.failed_keys``, ``routed_llm.attempts`` and any route
  annotations (``routed_llm.arm``, ``routed_llm.experiment``), and one
  ``routed_llm.attempt_failed`` event per failed attempt;
* the meter ``routed_llm`` counts ``routed_llm.requests`` (attempts, by key),
  ``routed_llm.failures`` (by key, error type and class),
  ``routed_llm.fallbacks`` (by the key failed from and the key failed to) and
  ``routed_llm.hedges`` (hedges started, by the slow key hedged and the key
  that won the call).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from opentelemetry import metrics, trace

from routed_llm.errors import classify_error

__all__ = ["FailoverEvent", "FailoverHook", "HedgeEvent", "HedgeHook", "RouteEvent", "RouteHook"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteEvent:
    """A key was chosen for an attempt.

    Attributes:
        key: The chosen key.
        model: The chosen model's name.
        attempt: The attempt's number in this call, from 1.
        failed_keys: The keys that failed before it, in order.
        elapsed: Seconds since the call began, by the ``RoutedLlm``'s clock.
    """

    key: str
    model: str
    attempt: int
    failed_keys: tuple[str, ...]
    elapsed: float


@dataclass(frozen=True)
class FailoverEvent:
    """An attempt failed before producing any output.

    Attributes:
        key: The key that failed.
        model: Its model's name.
        attempt: The failed attempt's number, from 1.
        error: The exception it raised.
        next_key: The key the router chose next, or None if it stopped (then
            ``error`` propagates to the caller).
        elapsed: Seconds since the call began, by the ``RoutedLlm``'s clock.
    """

    key: str
    model: str
    attempt: int
    error: BaseException
    next_key: str | None
    elapsed: float


@dataclass(frozen=True)
class HedgeEvent:
    """An attempt gave no first response in time, and the router was asked for a hedge.

    Attributes:
        key: The slow key, whose attempt goes on.
        model: Its model's name.
        waited: Seconds its attempt had waited for a first response.
        next_key: The key the router chose to run beside it, or None if it
            declined (or chose a key that already ran in this call).
        elapsed: Seconds since the call began, by the ``RoutedLlm``'s clock.
    """

    key: str
    model: str
    waited: float
    next_key: str | None
    elapsed: float


RouteHook: TypeAlias = Callable[[RouteEvent], "Awaitable[None] | None"]
"""``on_route`` hook: a sync or async callable taking a :class:`RouteEvent`."""

FailoverHook: TypeAlias = Callable[[FailoverEvent], "Awaitable[None] | None"]
"""``on_failover`` hook: a sync or async callable taking a :class:`FailoverEvent`."""

HedgeHook: TypeAlias = Callable[[HedgeEvent], "Awaitable[None] | None"]
"""``on_hedge`` hook: a sync or async callable taking a :class:`HedgeEvent`."""

_meter = metrics.get_meter("routed_llm")
_requests = _meter.create_counter("routed_llm.requests", unit="{attempt}", description="Attempts, by key.")
_failures = _meter.create_counter(
    "routed_llm.failures", unit="{attempt}", description="Attempts that failed before any output."
)
_skips = _meter.create_counter(
    "routed_llm.skips", unit="{check}", description="Times a strategy found a key unavailable by its health."
)
_fallbacks = _meter.create_counter(
    "routed_llm.fallbacks", unit="{fallback}", description="Fallbacks between keys."
)

_hedges = _meter.create_counter(
    "routed_llm.hedges", unit="{hedge}", description="Hedges started, by the key hedged and the winner."
)


async def call_hook(hook: Callable[[Any], Awaitable[None] | None], event: object) -> None:
    """Calls ``hook`` with ``event``, awaiting it if async.

    A hook that raises is logged with its traceback and otherwise ignored:
    observing a model call must never break it.
    """
    try:
        result = hook(event)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("RoutedLlm hook %r raised; the model call goes on.", hook)


def record_attempt(key: str) -> None:
    """Counts an attempt on ``key``."""
    _requests.add(1, {"routed_llm.key": key})


def record_failure(key: str, error: BaseException) -> None:
    """Counts a failed attempt and adds it as an event to the current span."""
    error_type = type(error).__name__
    _failures.add(
        1,
        {
            "routed_llm.key": key,
            "error.type": error_type,
            "routed_llm.error_class": classify_error(error),
        },
    )
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event("routed_llm.attempt_failed", {"routed_llm.key": key, "error.type": error_type})


def record_skip(key: str) -> None:
    """Counts a strategy finding ``key`` unavailable (its circuit open)."""
    _skips.add(1, {"routed_llm.key": key})


def record_fallback(from_key: str, to_key: str) -> None:
    """Counts a fallback from one key to another."""
    _fallbacks.add(1, {"routed_llm.from_key": from_key, "routed_llm.to_key": to_key})


def record_hedge(key: str, winner: str | None) -> None:
    """Counts a hedge started beside ``key``'s attempt; ``winner`` served the call ("" if none did)."""
    _hedges.add(1, {"routed_llm.key": key, "routed_llm.winner": winner or ""})


def record_served(route: Mapping[str, Any]) -> None:
    """Puts the serving route on the current span as ``routed_llm.*`` attributes."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    for name, value in route.items():
        if name in ("errors", "skipped"):
            continue
        span.set_attribute(f"routed_llm.{name}", value)

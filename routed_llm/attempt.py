"""One attempt of a routed call: one key serving one request, and what it holds.

A :class:`~routed_llm.routing.RoutedCall` coordinates a call's attempts: it
asks the router, records the errors and the route. Each attempt owns what
it took for itself: its health tracker's trial permit (and the verdict it
owes the tracker), its model's response stream, its copy of the request
when attempts run side by side (hedged requests), its task in a race, and
its answer (the first response, a judged answer held back, the judge's
annotations). :meth:`Attempt.close` gives all of it back.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse

from routed_llm.errors import classify_error

if TYPE_CHECKING:
    from routed_llm.health import HealthTracker
    from routed_llm.latency import LatencyTracker

__all__ = ["QUANTILES", "Attempt", "Hedging"]

logger = logging.getLogger(__name__)

_NO_NOTES: Mapping[str, Any] = MappingProxyType({})

QUANTILES: Final[Mapping[str, float]] = MappingProxyType({"p90": 0.9, "p95": 0.95, "p99": 0.99})
"""The quantile names ``RoutedLlm(hedge_after=...)`` takes, and the quantile each names."""


@dataclass(frozen=True)
class Hedging:
    """When a ``RoutedLlm`` hedges an attempt, and how many hedges it runs at once.

    Attributes:
        delays: Seconds each key's attempt waits for its first response before
            it is hedged; keys left out are not hedged. Empty in quantile mode.
        quantile: In quantile mode, the quantile of the key's own recent times
            to first response that its attempt waits (0.95 for ``"p95"``).
        max_hedges: The most attempts started by hedging in flight at once.
    """

    delays: Mapping[str, float]
    quantile: float | None
    max_hedges: int

    def delay(self, key: str, latency: LatencyTracker | None) -> float | None:
        """Seconds an attempt on ``key`` waits before it is hedged; None for never."""
        if self.quantile is None:
            return self.delays.get(key)
        assert latency is not None  # RoutedLlm requires it in quantile mode.
        return latency.quantile(key, self.quantile)


class Attempt:
    """One key's attempt at serving a call, and everything the attempt holds.

    Args:
        key: The key tried.
        health: The call's health tracker, if any: the attempt owes it a
            verdict once it has taken the key (:meth:`take`).
        permit: Names the call as the holder of a half-open trial permit.
        request: The attempt's own copy of the request, when attempts run
            side by side; None when the attempt edits the caller's request.
    """

    # Class-level defaults: an attempt that is not hedged sets no more than it uses (the hot path).
    request: LlmRequest | None = None
    pending = False  # The health tracker awaits this attempt's verdict.
    refused = False  # The key was not available when the attempt was announced.
    holding = False  # The first response is held back: a judged answer or an error response.
    notes: Mapping[str, Any] = _NO_NOTES  # What the accepting judge annotated.
    responses: AsyncGenerator[LlmResponse, None] | None = None
    first: LlmResponse | None = None
    held: list[LlmResponse] | None = None
    task: asyncio.Task[None] | None = None
    started = 0.0  # When the attempt started, on the event loop's clock (in a race).
    hedge_at: float | None = None  # When it is due for a hedge, on the event loop's clock; None for never.
    hedged = False  # Whether the router was asked to hedge it.

    def __init__(
        self,
        key: str,
        *,
        health: HealthTracker | None,
        permit: str,
        request: LlmRequest | None = None,
    ) -> None:
        self.key = key
        self._health = health
        self._permit = permit
        if request is not None:
            self.request = request

    async def take(self) -> None:
        """Takes the key from the health tracker: its half-open trial, here and in the store.

        A key that is not available is marked :attr:`refused`; the attempt
        is refused later, when another key could serve instead.
        """
        health = self._health
        if health is not None:
            self.refused = not await health._take(self.key, self._permit)
            self.pending = True

    def succeed(self) -> None:
        """Reports the attempt as a success to the health tracker, if it awaits a verdict."""
        if self.pending:
            self.pending = False
            self._health._share_success(self.key)  # type: ignore[union-attr]
            self._health.record_success(self.key)  # type: ignore[union-attr]

    def settle(self, error: BaseException | None) -> bool:
        """Reports the attempt to the health tracker: failed with ``error``, or no verdict.

        No verdict (cancelled, cut by the deadline, the call ended, a judge
        rejected the answer) gives a trial permit back.

        Returns:
            Whether the attempt awaited a verdict (and so was reported).
        """
        if not self.pending:
            return False
        self.pending = False
        health = self._health
        assert health is not None
        if error is None:
            health.release(self.key, self._permit)
            health._share_release(self.key, self._permit)
        else:
            health.record_failure(self.key, error, classify_error(error), self._permit)
        return True

    async def share_failure(self, error: BaseException) -> None:
        """Shares the failure :meth:`settle` reported with every replica, before the router is asked."""
        await self._health._share_failure(self.key, error, self._permit)  # type: ignore[union-attr]

    async def close(self) -> None:
        """Ends the attempt: cancels its task, closes its stream, gives its trial permit back.

        What the attempt was sent stays spent: its rate-budget reservation is
        kept. A cancelled attempt gets no health verdict.
        """
        await self.stop()
        self.settle(None)

    async def stop(self) -> None:
        """Cancels the attempt's task, if it runs, and closes its model's stream."""
        task = self.task
        if task is not None:
            if not task.done():
                task.cancel()
                await asyncio.wait((task,))
            if not task.cancelled():
                task.exception()  # Retrieved: a loser's error is no one's to report.
        responses, self.responses = self.responses, None
        if responses is not None:
            try:
                await responses.aclose()
            except Exception:
                logger.warning("Closing the stream of model key %r failed.", self.key, exc_info=True)


def copy_request(request: LlmRequest) -> LlmRequest:
    """A deep copy of ``request`` for one attempt, sharing its live tools (``tools_dict``)."""
    return copy.deepcopy(request, {id(request.tools_dict): request.tools_dict})


def check_hedging(
    hedge_after: object, max_hedges: object, keys: Mapping[str, Any], latency: LatencyTracker | None
) -> Hedging | None:
    """Checks ``RoutedLlm(hedge_after=..., max_hedges=...)`` and turns them into :class:`Hedging`.

    Raises:
        TypeError: If ``hedge_after`` is not None, a number, a mapping or a
            string, or ``max_hedges`` is not a whole number.
        ValueError: If a number of seconds is not positive and finite, a
            mapping names a key that is not routed, a string is not a
            quantile name, quantile mode has no ``latency``, or
            ``max_hedges`` is below 1.
    """
    if isinstance(max_hedges, bool) or not isinstance(max_hedges, int):
        raise TypeError(f"RoutedLlm(max_hedges=...) is a whole number, like 1; got {max_hedges!r}.")
    if max_hedges < 1:
        raise ValueError(
            f"RoutedLlm(max_hedges={max_hedges!r}) must be at least 1: it bounds the hedges in flight "
            "at once. To turn hedging off, leave hedge_after=None."
        )
    if hedge_after is None:
        return None
    if isinstance(hedge_after, str):
        quantile = QUANTILES.get(hedge_after)
        if quantile is None:
            raise ValueError(
                f"RoutedLlm(hedge_after={hedge_after!r}) is not a quantile name; use one of "
                f"{', '.join(repr(name) for name in QUANTILES)}, a number of seconds, or {{key: seconds}}."
            )
        if latency is None:
            raise ValueError(
                f"RoutedLlm(hedge_after={hedge_after!r}) waits for each key's own recent {hedge_after}, "
                "which a LatencyTracker measures: pass latency=LatencyTracker(...) too."
            )
        return Hedging(MappingProxyType({}), quantile, max_hedges)
    if isinstance(hedge_after, Mapping):
        unknown = sorted(str(key) for key in hedge_after if key not in keys)
        if unknown:
            raise ValueError(
                f"RoutedLlm(hedge_after=...) names the keys {unknown}, which are not in models "
                f"({', '.join(repr(key) for key in keys)}). Hedge routed keys only."
            )
        delays = {key: _seconds(value, f"hedge_after[{key!r}]") for key, value in hedge_after.items()}
        return Hedging(MappingProxyType(delays), None, max_hedges)
    seconds = _seconds(hedge_after, "hedge_after")
    return Hedging(MappingProxyType(dict.fromkeys(keys, seconds)), None, max_hedges)


def _seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"RoutedLlm({name}=...) is seconds, {{key: seconds}} or a quantile name such as 'p95'; "
            f"got {value!r}."
        )
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"RoutedLlm({name}={value!r}) must be a positive, finite number of seconds.")
    return float(value)

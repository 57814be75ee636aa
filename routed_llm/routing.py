"""The router loop: ask the router for a key, fail over while it allows.

These are the failover rules of both :class:`~routed_llm.RoutedLlm` (keys
name models, one call is a model call) and :class:`~routed_llm.RoutedAgent`
(keys name agents, one call is an invocation), written once:

* the router's first pick must be a routed key (else :class:`RoutingError`);
* an attempt that fails before its first output sends the router round again
  with an :class:`ErrorContext`, after the attempt's side effects are rolled
  back; each key runs at most once per call;
* a router that stops (``None``, or a key that already failed) lets the last
  error propagate, the very object; an unknown key is a :class:`RoutingError`
  chained to it;
* once an attempt produced output, the call belongs to it;
* every attempt is counted, announced to ``on_route`` and, when it fails,
  to ``on_failover``;
* with hedging (``RoutedLlm(hedge_after=...)``, :meth:`RoutedCall.race`),
  a slow attempt sends the router round with a :class:`HedgeDelay` and the
  attempts run side by side until the first answers.

One :class:`RoutedCall` lives for one call and holds everything that call
needs to remember: the keys that failed, their errors, and the snapshot that
rolls its subject (the request, or the session state) back between attempts.
What one attempt holds (its trial permit, its stream, its answer) is its
:class:`~routed_llm.attempt.Attempt`'s.
Nothing of it lives on the routed model or agent, so one instance serves any
number of concurrent calls.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NoReturn, Protocol, TypeAlias, TypeVar

from google.adk.models.base_llm import BaseLlm
from google.adk.models.base_llm_connection import BaseLlmConnection
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from pydantic import BaseModel

from routed_llm import observability
from routed_llm._text import shows_anything
from routed_llm.attempt import Attempt, Hedging, copy_request
from routed_llm.capabilities import unserved_need
from routed_llm.errors import (
    AttemptTimeout,
    CircuitOpen,
    DeadlineExceeded,
    HedgeDelay,
    NoResponse,
    ResponseRejected,
    RoutingError,
    StreamStalled,
    classify_error,
    is_error_response,
)
from routed_llm.health import HealthTracker
from routed_llm.latency import LatencyTracker
from routed_llm.limits import RateLimits
from routed_llm.observability import (
    FailoverEvent,
    FailoverHook,
    HedgeEvent,
    HedgeHook,
    RouteEvent,
    RouteHook,
)
from routed_llm.rollback import RequestSnapshot

__all__ = [
    "METADATA_KEY",
    "ErrorContext",
    "Judge",
    "LlmRouter",
    "RoutedCall",
    "RouterSettings",
    "Snapshot",
    "annotate_route",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R", bound=LlmResponse)

METADATA_KEY = "routed_llm"
"""The key under which each response's ``custom_metadata`` records its route."""


@dataclass(frozen=True)
class ErrorContext:
    """What the router is told when the model it chose has failed.

    Attributes:
        failed_keys: Every key that failed so far in this call.
        last_error: The exception the most recent attempt raised.
        errors: Each failed key's exception, in the order they failed.
    """

    failed_keys: frozenset[str]
    last_error: BaseException
    errors: Mapping[str, BaseException] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def last_key(self) -> str | None:
        """The key whose failure this context reports, if ``errors`` names it."""
        return list(self.errors)[-1] if self.errors else None


LlmRouter: TypeAlias = Callable[
    [Mapping[str, BaseLlm], LlmRequest, ErrorContext | None],
    str | Awaitable[str | None] | None,
]
"""A function that picks which model serves a request.

It receives the routed models by key, the request, and ``None`` on the first
pick or an :class:`ErrorContext` after a failure. It returns a key, or
``None`` (or ``""``) to choose nothing: on the first pick that is a
:class:`~routed_llm.RoutingError`, after a failure it stops the call and the
last model error propagates. It may be a plain or an ``async`` function.

Every time the router is asked, the request is the caller's, rolled back to
the state the caller passed in. Whatever the router edits then (a redaction,
say) belongs to the attempt it picks: that model receives the edited request,
and the edits are undone before the router is asked again.
"""


Judge: TypeAlias = Callable[[str, LlmResponse], bool | str | Awaitable[bool | str]]
"""A function that accepts or rejects a model's answer: ``judge(key, response)``.

It receives the key that answered and the answer's final response. It
returns ``True`` to accept, ``False`` or a string (the reason) to reject. It
may be a plain or an ``async`` function, and may add to the answer's route
record with :func:`annotate_route`. See ``RoutedLlm(accept=...)``.
"""

_RESERVED_NOTES = frozenset(
    {
        "key",
        "model",
        "agent",
        "router",
        "failed_keys",
        "errors",
        "rejections",
        "attempts",
        "inner",
        "rejected",
        "skipped",
        "hedged",
    }
)
CONFINED_TO = "confined_to"
"""The route note ``RoutingContext.confine`` writes: the key the rest of the call stays on."""
_notes: ContextVar[dict[str, Any] | None] = ContextVar("routed_llm_route_notes", default=None)


def annotate_route(**values: str | int | float | bool) -> bool:
    """Adds values to the route record of the call being routed.

    Call it from a router (or a strategy's ``decide``). The values land in
    every response's ``custom_metadata["routed_llm"]`` and, prefixed
    ``routed_llm.``, on the model call's OpenTelemetry span. They survive a
    failover: an A/B test's arm stays recorded when another key serves.

    Called from a judge (``RoutedLlm(accept=...)``), the values belong to the
    answer judged: they are recorded only if that answer is the one output.

    Args:
        **values: Names and plain values, e.g. ``arm="pro"``.

    Returns:
        True if recorded; False when no ``RoutedLlm`` call is routing (a
        strategy called directly, in a unit test say).

    Raises:
        ValueError: If a name is one RoutedLlm records itself.
    """
    clash = sorted(_RESERVED_NOTES.intersection(values))
    if clash:
        raise ValueError(f"annotate_route() cannot set {clash}: the route record holds those itself.")
    notes = _notes.get()
    if notes is None:
        return False
    notes.update(values)
    return True


def route_notes() -> Mapping[str, Any]:
    """The annotations made so far in the call being routed (empty outside one)."""
    return MappingProxyType(_notes.get() or {})


class Snapshot(Protocol):
    """What an attempt changed, ready to be undone."""

    def restore(self) -> None:
        """Puts the subject back as it was when the snapshot was taken."""


@dataclass(frozen=True)
class RouterSettings:
    """What every call of one ``RoutedLlm`` (or ``RoutedAgent``) shares.

    Attributes:
        models: What the keys route to (models, or agents) by key.
        router: The router that picks among them.
        on_route: Called with a :class:`~routed_llm.RouteEvent` per attempt.
        on_failover: Called with a :class:`~routed_llm.FailoverEvent` per
            failed attempt.
        clock: Seconds, monotonic; times the events.
        first_response_timeout: Seconds each key's model has to give its
            first response (or open its live connection); keys left out have
            no limit.
        idle_timeout: Seconds a model may go silent once it began answering.
        deadline: Seconds the whole call may wait for a first response,
            every attempt together.
        limits: Rate budgets; a request is reserved before each attempt on
            a limited key, and strategies skip keys whose budget is spent.
        health: Told of every attempt's outcome; strategies skip the keys
            it says are unavailable.
        snapshot: Records a call's subject (the request, or the invocation)
            before the first router ask, to roll back every failed attempt.
        label: What a key names, for the route record and messages:
            ``"model"`` (named by ``.model``) or ``"agent"`` (``.name``).
        record: Entries every route record carries (a routed agent's name).
        accept: The judge of each judged key; keys left out are not judged.
        latency: Records each answered attempt's time to first response.
        hedging: When to hedge a slow attempt (models only); None for never.
        on_hedge: Called with a :class:`~routed_llm.HedgeEvent` per hedge
            the router is asked for.
    """

    models: Mapping[str, Any]
    router: Callable[..., Any]
    on_route: RouteHook | None = None
    on_failover: FailoverHook | None = None
    clock: Callable[[], float] = time.perf_counter
    first_response_timeout: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    idle_timeout: float | None = None
    deadline: float | None = None
    limits: RateLimits | None = None
    health: HealthTracker | None = None
    snapshot: Callable[[Any], Snapshot] = RequestSnapshot.take
    label: str = "model"
    record: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    accept: Mapping[str, Judge] = field(default_factory=lambda: MappingProxyType({}))
    latency: LatencyTracker | None = None
    hedging: Hedging | None = None
    on_hedge: HedgeHook | None = None


_health: ContextVar[HealthTracker | None] = ContextVar("routed_llm_health", default=None)
_limits: ContextVar[RateLimits | None] = ContextVar("routed_llm_limits", default=None)


def is_available(key: str) -> bool:
    """Whether the call being routed may try ``key`` now, by its health tracker and rate budgets.

    True outside a routing call and when the routed model has no
    :class:`~routed_llm.HealthTracker` and no :class:`~routed_llm.RateLimits`.
    """
    return unavailable_reason(key) is None


def unavailable_reason(key: str) -> str | None:
    """Why the call being routed may not try ``key`` now, by its health and budgets; None if it may."""
    health = _health.get()
    limits = _limits.get()
    if health is not None and not health.is_available(key):
        reason = "its circuit is open, or its half-open trial is in flight"
    elif limits is not None and not limits.is_available(key):
        reason = "its rate budget for this minute is spent"
    else:
        return None
    observability.record_skip(key)
    return reason


def note_skipped(key: str, reason: str) -> None:
    """Records in the route record of the call being routed that ``key`` cannot serve its request."""
    notes = _notes.get()
    if notes is not None:
        notes.setdefault("skipped", {})[key] = reason


def _available(settings: RouterSettings, key: str) -> bool:
    """Whether ``key`` is available by ``settings``' health tracker and rate budgets."""
    health, limits = settings.health, settings.limits
    return (health is None or health.is_available(key)) and (limits is None or limits.is_available(key))


def soonest_available(keys: Iterable[str]) -> str | None:
    """Of ``keys``, the one whose cooldown ends soonest (the first, without a tracker)."""
    health = _health.get()
    if health is None:
        return next(iter(keys), None)
    return health.soonest(keys)


class RoutedCall:
    """The routing state of one call: a model call, or an agent's invocation.

    Args:
        settings: What the ``RoutedLlm`` or ``RoutedAgent`` routes with.
        subject: What the router is shown: the caller's ``LlmRequest`` (edited
            in place as models require) or the ``InvocationContext``.
    """

    __slots__ = (
        "_attempt",
        "_cancelling",
        "_deadline_error",
        "_errors",
        "_expires",
        "_judge_error",
        "_models",
        "_notes",
        "_race",
        "_rejected",
        "_served",
        "_settings",
        "_snapshot",
        "_started",
        "_subject",
    )

    def __init__(self, settings: RouterSettings, subject: Any) -> None:
        self._settings = settings
        self._models = settings.models
        self._subject = subject
        self._errors: dict[str, BaseException] = {}
        self._notes: dict[str, Any] = {}
        self._snapshot: Snapshot | None = None
        self._served = False
        self._started = settings.clock()
        task = asyncio.current_task()
        # Cancellation requests already pending when the call began (Python 3.11 leaves one behind
        # after a failed TaskGroup); only a new one means this call is being cancelled.
        self._cancelling = task.cancelling() if task is not None else 0
        self._deadline_error: DeadlineExceeded | None = None
        self._attempt: Attempt | None = None  # The latest attempt announced; in a race, the winner.
        self._race: _Race | None = None  # The attempts run side by side, when hedging.
        self._judge_error: Exception | None = None
        # The rejected answer to output if no model serves: the error, its held output and its
        # judge's annotations. The last one a judge rejected, else the last error response.
        self._rejected: tuple[ResponseRejected, list[LlmResponse], Mapping[str, Any]] | None = None
        # When the deadline runs out, on the event loop's clock (the one asyncio.timeout uses).
        self._expires = None if settings.deadline is None else _loop_time() + settings.deadline

    async def first_key(self) -> str:
        """Asks the router for the first pick and prepares the request for it.

        The request is recorded before the router sees it, so whatever the
        router edits (a redaction, say) belongs to the attempt it picks and
        is undone before the router is asked again.

        Returns:
            The chosen key.

        Raises:
            RoutingError: If the router chose nothing, or a key that is not
                routed.
        """
        # Keep the caller's request as it is now, to undo the edits of each
        # attempt and of the router that picked it.
        self._snapshot = self._settings.snapshot(self._subject)
        key = await self._ask(None)
        if key is None:
            raise RoutingError(
                f"The router chose no {self._settings.label} for the request. Return one of the keys "
                f"{self._key_list()}, or put a strategy with a default last in the chain.",
                key=None,
                available=tuple(self._models),
            )
        self._check_known(key, cause=None)
        logger.debug("Router chose %r for the first attempt.", key)
        self._attempt = await self._announce(key)
        return key

    async def pinned_key(self, key: str) -> str:
        """Takes ``key`` without asking the router (a resumed live session's owner).

        Returns:
            ``key``.
        """
        self._check_known(key, cause=None)
        self._snapshot = self._settings.snapshot(self._subject)
        self._attempt = await self._announce(key)
        return key

    @property
    def deadline_error(self) -> DeadlineExceeded | None:
        """The :class:`DeadlineExceeded` this call raised, if it did (not a nested model's)."""
        return self._deadline_error

    def raise_if_cancelled(self, error: Exception) -> None:
        """Raises ``asyncio.CancelledError`` from ``error`` if this call is being cancelled.

        The call is being cancelled when its task has a cancellation request
        that was not pending when the call began, and ``error`` came from
        that cancellation (a model or SDK that reports it as an ordinary
        error still chains or carries the ``CancelledError``).
        """
        task = asyncio.current_task()
        if task is None or task.cancelling() <= self._cancelling or not _from_cancellation(error):
            return
        raise asyncio.CancelledError("The call was cancelled while a model ran.") from error

    def delegate(self, key: str, request: LlmRequest | None = None) -> BaseLlm:
        """Returns the model under ``key``, with the request (or ``request``) addressed to it.

        Models read the model name off the request, so it is set to the
        delegate's own name before every attempt.

        Raises:
            RoutingError: If the request needs what the model lacks (see
                :func:`~routed_llm.capabilities.unserved_need`); nothing
                was sent. Chained to the call's last model error, if any.
        """
        model: BaseLlm = self._models[key]
        need = unserved_need(model, self._subject)
        if need is not None:
            raise RoutingError(
                f"The router chose {key!r}, which cannot serve this request: {need}. Strategies skip "
                "such keys (ctx.is_available(key) is False); a router of your own can ask "
                "RoutingContext(llm_request, models).unavailable_reason(key) before choosing.",
                key=key,
                available=tuple(self._models),
            ) from next(reversed(self._errors.values()), None)
        (self._subject if request is None else request).model = model.model
        return model

    async def fail_over(self, key: str, error: Exception) -> str:
        """Records that ``key`` failed with ``error`` and asks for another key.

        The request is rolled back to the state the caller passed in before
        the router is asked, and the failure is counted and put on the span
        first, so a router that raises still leaves the outage on record.

        Returns:
            The next key to try.

        Raises:
            asyncio.CancelledError: If the call's own task is being cancelled,
                chained to ``error``: the call ends rather than fails over,
                even when a model reported the cancellation as an ordinary
                error (so ``asyncio.timeout`` still raises ``TimeoutError``).
            Exception: ``error`` itself, the very object, when the router stops
                (it returned nothing, or a key that already failed in this call).
            RoutingError: If the router chose a key that is not routed, with
                ``error`` as its cause.
        """
        attempt = self._attempt
        assert attempt is not None
        assert attempt.key == key
        next_key = await self._ask_after(attempt, error)
        if next_key is None:
            raise error
        self._attempt = await self._announce(next_key)
        return next_key

    async def _ask_after(self, attempt: Attempt, error: Exception, busy: Iterable[str] = ()) -> str | None:
        """Records that ``attempt`` failed with ``error`` and asks the router for another key.

        Args:
            attempt: The failed attempt.
            error: What it raised.
            busy: Keys whose attempts still run (in a race): a pick of one
                of them stops this branch, like a key that already failed.

        Returns:
            The next key to try, or None when the router stopped.

        Raises:
            asyncio.CancelledError: If the call's own task is being cancelled.
            DeadlineExceeded: If the call's deadline has run out.
            RoutingError: If the router chose a key that is not routed.
            Exception: Whatever the router raised.
        """
        key = attempt.key
        self._roll_back()
        self.raise_if_cancelled(error)
        if attempt.settle(error):  # Shared before the router is asked, so every replica's next call sees it.
            await attempt.share_failure(error)
        number = len(self._errors) + 1
        if self._race is not None:
            self._errors.pop(key, None)  # A hedged key that fails: its failure replaces its HedgeDelay.
        self._errors[key] = error
        observability.record_failure(key, error)
        if self._expires is not None and _loop_time() >= self._expires:
            await self._report_failover(key, number, error, None)
            self._raise_deadline(None)
        try:
            next_key = await self._ask_again(error, busy)
        except Exception:
            await self._report_failover(key, number, error, None)
            raise
        await self._report_failover(key, number, error, next_key)
        if next_key is None:
            logger.debug("Router stopped after %r failed with %s.", key, type(error).__name__)
            return None
        logger.warning(
            "%s key %r failed with %s; failing over to %r.",
            self._settings.label.capitalize(),
            key,
            type(error).__name__,
            next_key,
        )
        return next_key

    async def _ask_again(self, error: Exception, busy: Iterable[str]) -> str | None:
        """Asks the router for the next key with the call's errors, ``error`` the last.

        Returns:
            The key, or None if the router stopped: it chose nothing, a key
            that already failed (or was hedged) in this call, or one in ``busy``.

        Raises:
            RoutingError: If the router chose a key that is not routed.
        """
        context = ErrorContext(
            failed_keys=frozenset(self._errors),
            last_error=error,
            errors=MappingProxyType(dict(self._errors)),
        )
        next_key = await self._ask(context)
        if next_key is not None and (next_key in self._errors or next_key in busy):
            logger.debug("Router chose %r, which already ran in this call; stopping.", next_key)
            return None
        if next_key is not None:
            self._check_known(next_key, cause=error)
        return next_key

    @property
    def hedging(self) -> Hedging | None:
        """When this call hedges a slow attempt (``RoutedLlm(hedge_after=...)``); None for never."""
        return self._settings.hedging

    async def race(
        self, open_stream: Callable[[str, LlmRequest], AsyncGenerator[LlmResponse, None]]
    ) -> Attempt:
        """Runs the call's attempts side by side, hedging slow ones, until one answers.

        The router's first pick starts at once. An attempt that has given
        no first response when its hedge delay is up is hedged once: the
        router is asked again with a :class:`~routed_llm.HedgeDelay` as the
        last error (the slow key in ``failed_keys``), and the key it picks
        starts beside the slow attempt, which goes on. An attempt that fails
        sends the router round as in :meth:`fail_over`, while the others
        run; a router that stops then stops only that branch. The first
        attempt to answer (a judged key: with its accepted answer) wins, and
        every other is cancelled and closed at once, with no health verdict.
        No more than ``1 + max_hedges`` attempts run at once: a pick beyond
        that is not started. Each attempt edits its own copy of the request;
        the caller's request is left as the caller passed it in.

        Args:
            open_stream: Starts ``key``'s model on a request (the attempt's
                own copy) and returns its response stream, unstarted.

        Returns:
            The winning attempt: its first response (``first``), its held
            answer when it was held (``held``), and the rest of its stream
            (``responses``), which the caller reads and closes.

        Raises:
            RoutingError: If the router picks no key first, or an unknown
                key, or a key whose model cannot serve the request.
            DeadlineExceeded: The call's deadline ran out first.
            Exception: The last attempt's error, the very object, when no
                attempt runs and the router stopped; whatever the router or
                a judge raised.
        """
        self._race = race = _Race(open_stream)
        try:
            await self.first_key()
            first = self._attempt
            assert first is not None
            first.request = copy_request(self._subject)
            self._roll_back()
            race.attempts.append(first)
            self._start(race, first)
            last: Exception | None = None
            while race.running:
                done, _ = await asyncio.wait(
                    race.running, timeout=self._until_hedge(race), return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    await self._hedge_due(race)
                    continue
                finished = sorted((race.running.pop(task) for task in done), key=lambda a: a.started)
                race.winner = next((attempt for attempt in finished if _answered(attempt)), None)
                if race.winner is not None:
                    self._attempt = race.winner
                    return race.winner
                for attempt in finished:
                    last = await self._after_failure(race, attempt)
            assert last is not None
            raise last
        finally:
            await race.close()

    def _until_hedge(self, race: _Race) -> float | None:
        """Seconds until a running attempt is due for a hedge; None if none will be, or no room."""
        hedging = self._settings.hedging
        assert hedging is not None
        if len(race.running) > hedging.max_hedges:
            return None
        due = [
            attempt.hedge_at
            for attempt in race.running.values()
            if attempt.hedge_at is not None and _hedgeable(attempt)
        ]
        return max(min(due) - _loop_time(), 0.0) if due else None

    async def _hedge_due(self, race: _Race) -> None:
        """Asks the router to hedge each running attempt whose hedge delay is up, while there is room."""
        hedging = self._settings.hedging
        assert hedging is not None
        for attempt in list(race.running.values()):
            if len(race.running) > hedging.max_hedges:
                return
            now = _loop_time()
            if not _hedgeable(attempt) or attempt.hedge_at > now:  # type: ignore[operator]
                continue
            attempt.hedged = True
            next_key = await self._ask_hedge(race, attempt, now - attempt.started)
            if next_key is not None:
                race.slow.append(attempt.key)
                race.hedges.append(next_key)
                await self._begin(race, next_key)

    async def _after_failure(self, race: _Race, attempt: Attempt) -> Exception:
        """Handles an attempt of the race that failed: asks the router, starts its pick if there is room.

        Returns:
            The attempt's error.

        Raises:
            Exception: The error itself when it ends the call (a judge's
                error, the deadline); whatever asking the router raised.
        """
        assert attempt.task is not None
        error = attempt.task.exception()
        if not isinstance(error, Exception):
            raise error  # type: ignore[misc]  # A BaseException such as KeyboardInterrupt.
        if error is self._judge_error or error is self._deadline_error:
            raise error
        await attempt.stop()  # Releases what it holds before the router is asked.
        next_key = await self._ask_after(attempt, error, [other.key for other in race.running.values()])
        hedging = self._settings.hedging
        assert hedging is not None
        if next_key is not None:
            if len(race.running) > hedging.max_hedges:
                logger.info("Not starting %r: %d attempts already run.", next_key, len(race.running))
            else:
                await self._begin(race, next_key)
        return error

    async def _begin(self, race: _Race, key: str) -> None:
        """Starts an attempt on ``key`` in the race, on its own copy of the request as the router left it."""
        request = copy_request(self._subject)
        self._roll_back()
        attempt = await self._announce(key, request)
        race.attempts.append(attempt)  # Closed with the race, even if it cannot start.
        self._start(race, attempt)

    def _start(self, race: _Race, attempt: Attempt) -> None:
        """Starts ``attempt``'s model in a task of its own, and its hedge timer."""
        hedging = self._settings.hedging
        assert hedging is not None
        assert attempt.request is not None
        attempt.responses = self.metered(attempt.key, race.open_stream(attempt.key, attempt.request))
        attempt.started = _loop_time()
        delay = hedging.delay(attempt.key, self._settings.latency)
        attempt.hedge_at = None if delay is None else attempt.started + delay
        attempt.task = asyncio.get_running_loop().create_task(self._run(attempt))
        race.running[attempt.task] = attempt

    async def _run(self, attempt: Attempt) -> None:
        """One attempt of a race, in its own task: its first response, held and judged if need be."""
        assert attempt.responses is not None
        first = await self._first_response(attempt, attempt.responses)
        if first is None:
            raise NoResponse(attempt.key)
        attempt.first = first
        if attempt.holding:
            attempt.held = await self._held_output(attempt, first, attempt.responses)

    async def _ask_hedge(self, race: _Race, attempt: Attempt, waited: float) -> str | None:
        """Asks the router for a key to run beside ``attempt``, slow by ``waited`` seconds.

        Returns:
            The key, or None if the router declined.
        """
        key = attempt.key
        delay = HedgeDelay(key, waited)
        race.delays[key] = delay
        self._errors[key] = delay
        next_key = await self._ask_again(delay, [other.key for other in race.running.values()])
        if next_key is None:
            logger.debug("Router declined to hedge %r.", key)
        else:
            logger.info(
                "Model key %r gave no first response in %.3g s; hedging with %r.", key, waited, next_key
            )
        if self._settings.on_hedge is not None:
            await observability.call_hook(
                self._settings.on_hedge, HedgeEvent(key, self.name_of(key), waited, next_key, self._elapsed())
            )
        return next_key

    def first_response(self, key: str, responses: AsyncIterator[_R]) -> Awaitable[_R | None]:
        """Waits for the first response of ``key``'s model, within the time limits.

        An agent's first event is output as it comes, and an agent's run
        that ended without any stands. A model's judged answer or error
        response is held (see :attr:`holding`), and a model that ended
        without any response gets no verdict here: the call fails over with
        :class:`~routed_llm.NoResponse`.

        Returns:
            The first response, or None if the model ended without any.

        Raises:
            AttemptTimeout: ``key``'s ``first_response_timeout`` expired; the
                wait was cancelled.
            DeadlineExceeded: The call's deadline ran out first, chained to
                the last model error of the call, if any.
            Exception: Whatever the model raised.
        """
        # The attempt's own coroutine, returned rather than awaited: no extra frame on the hot path.
        return self._first_response(self._attempt, responses)  # type: ignore[arg-type]

    async def _first_response(self, attempt: Attempt, responses: AsyncIterator[_R]) -> _R | None:
        """:meth:`first_response` of ``attempt``."""
        key = attempt.key
        waiting: Awaitable[_R | None] = anext(responses, None)
        if self._settings.latency is not None:
            waiting = self._settings.latency._timed(key, waiting)
        response = await self._first(attempt, waiting, settle=False)
        if response is None and self._settings.label == "model":
            return None
        # A judged answer or an error response (or error event) is held, and gets its verdict then.
        attempt.holding = response is not None and (
            key in self._settings.accept
            or (response.error_code is not None and is_error_response(response))
            or (self._settings.label == "model" and not shows_anything(response))
        )
        if not attempt.holding:
            self._served = True
            attempt.succeed()
        return response

    @property
    def holding(self) -> bool:
        """Whether the answer :meth:`first_response` just returned must be held (:meth:`held_output`)."""
        return self._attempt is not None and self._attempt.holding

    def held_output(
        self, key: str, first: LlmResponse, responses: AsyncIterator[LlmResponse]
    ) -> Awaitable[list[LlmResponse]]:
        """Holds back the rest of an answer to be judged before any of it is output.

        Called when :attr:`holding` says so: for a judged key's answer, an
        error response, or an answer whose first response carries nothing
        (rejected if none of it does). Any other answer streams as it arrives. Holding
        and judging count against the call's deadline: when it runs out,
        the held stream is closed and the judge cancelled.

        Args:
            key: The key that answered.
            first: Its first response, from :meth:`first_response`.
            responses: The rest of its responses.

        Returns:
            Every response of the accepted answer, in order.

        Raises:
            ResponseRejected: The answer is an error response or carries
                nothing, or the key's judge rejected it; the held output is kept for
                :meth:`rejected_output`.
            DeadlineExceeded: The call's deadline ran out while the answer
                was held or judged.
            Exception: Whatever the model raised while its answer was held
                (nothing was output, so it fails over like any other
                failure), or the judge raised (see :attr:`judge_error`).
        """
        return self._held_output(self._attempt, first, responses)  # type: ignore[arg-type]

    async def _held_output(
        self, attempt: Attempt, first: LlmResponse, responses: AsyncIterator[LlmResponse]
    ) -> list[LlmResponse]:
        """:meth:`held_output` of ``attempt``."""
        if self._expires is None:
            return await self._hold(attempt, first, responses)
        try:
            async with asyncio.timeout_at(self._expires) as scope:
                return await self._hold(attempt, first, responses)
        except Exception:
            if not scope.expired():
                raise
            self._raise_deadline(attempt.key)

    async def _hold(
        self, attempt: Attempt, first: LlmResponse, responses: AsyncIterator[LlmResponse]
    ) -> list[LlmResponse]:
        """Holds, then judges, ``attempt``'s answer: :meth:`held_output` without the deadline."""
        key = attempt.key
        judge = self._settings.accept.get(key)
        refused = is_error_response(first)
        held = [first]
        while (response := await self.next_response(key, responses)) is not None:
            held.append(response)
        if refused:
            code = getattr(first.error_code, "value", first.error_code)
            detail = f": {first.error_message}" if first.error_message else ""
            rejection = ResponseRejected(key, first, f"the model answered with the error {code}{detail}")
            self._keep_rejected(rejection, held, _NO_NOTES)
            raise rejection
        if not any(map(shows_anything, held)):  # Gemini's 200 with finishReason STOP and no content, say.
            rejection = ResponseRejected(key, held[-1], "the model answered with nothing in its answer")
            self._keep_rejected(rejection, held, _NO_NOTES)
            raise rejection
        if judge is None:  # Held only because it began with nothing in it.
            self._served = True
            attempt.succeed()
            return held
        notes: dict[str, Any] = {}
        verdict = await self._judge(judge, key, held[-1], notes)
        if verdict is True:
            attempt.notes = notes
            self._served = True
            attempt.succeed()
            return held
        # The model answered: its judge's doubt is no verdict on its health.
        attempt.settle(None)
        reason = verdict or f"the judge of {key!r} rejected the answer"
        rejection = ResponseRejected(key, held[-1], reason)
        self._keep_rejected(rejection, held, notes)
        logger.info("The answer of model key %r was rejected: %s", key, reason)
        raise rejection

    def _keep_rejected(
        self, rejection: ResponseRejected, held: list[LlmResponse], notes: Mapping[str, Any]
    ) -> None:
        """Keeps a rejected answer for :meth:`rejected_output`, unless one kept outranks it.

        A refusal outranks an answer a judge rejected, which outranks any
        other error response; of equals, the later is kept. A refusal from
        a model able to answer judged the request itself unsafe: an unsure
        answer from another model must not override it.
        """
        if self._rejected is None or _rank(rejection, held) >= _rank(*self._rejected[:2]):
            self._rejected = (rejection, held, notes)

    @property
    def judge_error(self) -> Exception | None:
        """What a judge raised in this call, if one did: it ends the call, with no failover."""
        return self._judge_error

    def rejected_output(self, error: Exception, metadata_key: str = METADATA_KEY) -> list[LlmResponse] | None:
        """The last rejected answer, if the call ends with ``error`` and no model served.

        The call ends that way when the router stops (``error`` is the last
        model error, a rejection or not) or the deadline runs out. Then an
        answer rejected earlier in the call is output after all, as it was,
        each response marked ``rejected`` with the reason in its record: the
        last refusal, else the last answer a judge rejected, else the last
        error response.

        Returns:
            The rejected answer's responses, stamped; None if no answer was
            rejected, or the call ends otherwise (a router that raised, say).
        """
        if self._rejected is None or not (
            error is self._deadline_error or any(error is failed for failed in self._errors.values())
        ):
            return None
        rejection, held, notes = self._rejected
        if error is not rejection:
            logger.warning(
                "No model served after the answer of %r was rejected (the last error: %s); "
                "outputting the rejected answer.",
                rejection.key,
                type(error).__name__,
            )
        errors = {failed: type(failure).__name__ for failed, failure in self._errors.items()}
        if error is self._deadline_error and self._deadline_error.key is not None:
            errors[self._deadline_error.key] = type(error).__name__  # The attempt the deadline cut.
        route = {
            **self._notes,
            **notes,
            **self._settings.record,
            "key": rejection.key,
            self._settings.label: self.name_of(rejection.key),
            "failed_keys": list(errors),
            "errors": errors,
            "rejections": self._rejections(),
            "attempts": len(errors),
            "rejected": rejection.reason,
        }
        observability.record_served(route)
        return [self.stamp(response, route, metadata_key) for response in held]

    async def open_connection(
        self, key: str, stack: AsyncExitStack, connect: AbstractAsyncContextManager[BaseLlmConnection]
    ) -> BaseLlmConnection:
        """Opens a live connection on ``stack`` within ``key``'s first-response limit.

        Raises:
            AttemptTimeout: The connection did not open in time.
            DeadlineExceeded: The call's deadline ran out first.
            Exception: Whatever the model raised.
        """
        return await self._first(self._attempt, stack.enter_async_context(connect))  # type: ignore[arg-type]

    @property
    def idle_timeout(self) -> float | None:
        """The longest wait between two responses once output began; None for no limit."""
        return self._settings.idle_timeout

    def metered(
        self, key: str, responses: AsyncGenerator[LlmResponse, None]
    ) -> AsyncGenerator[LlmResponse, None]:
        """``key``'s model's responses, their tokens counted against its rate budget when they end."""
        limits = self._settings.limits
        return responses if limits is None else limits._metered(key, responses)

    async def next_response(self, key: str, responses: AsyncIterator[LlmResponse]) -> LlmResponse | None:
        """Waits for the next response once output began, within ``idle_timeout``.

        Returns:
            The next response, or None at the end of the stream.

        Raises:
            StreamStalled: The model sent nothing for ``idle_timeout`` seconds.
            Exception: Whatever the model raised.
        """
        idle = self._settings.idle_timeout
        if idle is None:
            return await anext(responses, None)
        try:
            async with asyncio.timeout(idle) as scope:
                return await anext(responses, None)
        except Exception as error:
            if scope.expired():
                raise StreamStalled(key, idle) from error
            raise

    def release(self) -> None:
        """Ends the call: rolls back an unanswered request, then drops the call's state.

        A call that ends before any output (every model failed, the router
        stopped, or the call was cancelled) leaves the caller's request as
        the caller passed it in.

        Dropping matters too: a failed model's exception holds a traceback,
        the traceback holds the frame that ran this call, and this call holds
        the exception: a cycle that only the garbage collector can free,
        taking the snapshot with it. Releasing breaks the cycle so all of it
        is freed at once.
        """
        if not self._served:
            self._roll_back()
        if self._attempt is not None:
            self._attempt.settle(None)
        self._snapshot = None
        self._errors = {}

    def route_metadata(self, key: str) -> dict[str, Any]:
        """The ``custom_metadata`` entry that records how ``key`` came to serve."""
        attempt = self._attempt
        if self._race is not None:
            return self._race_metadata(key, self._race)
        route = {
            **self._notes,
            **(_NO_NOTES if attempt is None else attempt.notes),
            **self._settings.record,
            "key": key,
            self._settings.label: self.name_of(key),
            "failed_keys": list(self._errors),
            "errors": {failed: type(error).__name__ for failed, error in self._errors.items()},
            "attempts": len(self._errors) + 1,
        }
        if self._rejected is not None:
            route["rejections"] = self._rejections()
        return route

    def _race_metadata(self, key: str, race: _Race) -> dict[str, Any]:
        """:meth:`route_metadata` of a race: a hedged key is no failed key; ``hedged`` names the hedges."""
        attempt = self._attempt
        delays = race.delays
        errors = {failed: error for failed, error in self._errors.items() if delays.get(failed) is not error}
        route = {
            **self._notes,
            **(_NO_NOTES if attempt is None else attempt.notes),
            **self._settings.record,
            "key": key,
            self._settings.label: self.name_of(key),
            "failed_keys": list(errors),
            "errors": {failed: type(error).__name__ for failed, error in errors.items()},
            "attempts": len(race.attempts),
            "hedged": list(race.hedges),
        }
        if self._rejected is not None:
            route["rejections"] = self._rejections()
        return route

    def _rejections(self) -> dict[str, str]:
        """Why each rejected answer of the call was rejected, by key."""
        return {
            failed: error.reason
            for failed, error in self._errors.items()
            if isinstance(error, ResponseRejected)
        }

    def name_of(self, key: str) -> str:
        """The name of the model (or agent) under ``key``."""
        routee = self._models[key]
        return str(routee.model if self._settings.label == "model" else routee.name)

    @staticmethod
    def stamp(response: _R, route: dict[str, Any], metadata_key: str = METADATA_KEY) -> _R:
        """Returns a copy of ``response`` that records ``route`` in its ``custom_metadata``.

        The delegate's own object is never changed: a delegate may yield one
        object twice, or hand the same cached object to several callers.
        The copy is shallow (content and parts are shared, as ADK shares
        them between an event and the session), and so is the record: the
        responses of one call share its ``route`` dict. Metadata the delegate
        set is kept; if the delegate is itself routed, its own route is kept
        under ``"inner"``. Events (an ``LlmResponse`` subclass) are stamped
        the same way, under ``metadata_key``.
        """
        existing = response.custom_metadata
        if not existing:  # The common case, once per streamed chunk.
            return _copy_with_metadata(response, {metadata_key: route})
        inner = existing.get(metadata_key)
        entry = route if inner is None else {**route, "inner": inner}
        return _copy_with_metadata(response, {**existing, metadata_key: entry})

    async def _first(self, attempt: Attempt, waiting: Awaitable[_T], *, settle: bool = True) -> _T:
        """Awaits ``waiting`` (a first response, an open connection) within ``attempt``'s limits.

        With ``settle``, an answer is the attempt's success; without, the
        caller gives the verdict.
        """
        key = attempt.key
        if attempt.refused and self._others_available(key):
            close = getattr(waiting, "close", None)
            if close is not None:
                close()  # Never awaited: the attempt is not made.
            raise CircuitOpen(key, self._settings.health.available_at(key))  # type: ignore[union-attr]
        if self._settings.limits is not None:
            try:
                await self._settings.limits._reserve(key)
            except BaseException:
                close = getattr(waiting, "close", None)
                if close is not None:
                    close()  # Never awaited: the attempt is not made.
                raise
        limit, by_deadline = self._first_response_limit(key)
        if limit is None:
            result = await waiting
        else:
            try:
                async with asyncio.timeout(limit) as scope:
                    result = await waiting
            except Exception as error:
                if not scope.expired():
                    raise
                if by_deadline:
                    self._raise_deadline(key)
                # Chained to what the model raised on its way out: an SDK may
                # report the cancellation as an error of its own.
                raise AttemptTimeout(key, limit) from error
        if settle:
            self._served = True
            attempt.succeed()
        return result

    async def _judge(
        self, judge: Judge, key: str, response: LlmResponse, notes: dict[str, Any]
    ) -> bool | str:
        """Asks ``judge`` about ``key``'s answer, its annotations going to ``notes``.

        Raises:
            TypeError: If the judge returns anything but a bool or a string.
            asyncio.CancelledError: If the call is being cancelled, chained
                to what the judge raised on its way out.
            Exception: Whatever the judge raised; kept as :attr:`judge_error`.
        """
        token = _notes.set(notes)
        try:
            verdict = judge(key, response)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if not isinstance(verdict, (bool, str)):
                raise TypeError(
                    f"The judge of {key!r} returned {verdict!r} ({type(verdict).__name__}); a judge "
                    "returns True to accept, or False or a reason string to reject."
                )
        except Exception as error:
            self.raise_if_cancelled(error)  # A judge may report its cancellation as an error.
            self._judge_error = error
            raise
        finally:
            _notes.reset(token)
        return verdict

    @property
    def _permit(self) -> str:
        """Names this call as the holder of a trial permit."""
        return f"{id(self):x}"

    def _others_available(self, key: str) -> bool:
        """Whether a routed key other than ``key``, not failed in this call, is available now.

        None is while the call is confined to ``key`` (``RoutingContext.confine``).
        """
        if self._notes.get(CONFINED_TO) == key:
            return False
        return any(
            other != key
            and other not in self._errors
            and _available(self._settings, other)
            and self._can_serve(other)
            for other in self._candidates()
        )

    def _can_serve(self, key: str) -> bool:
        """Whether ``key``'s model has what the request needs (always true of an agent)."""
        model = self._models[key]
        return not isinstance(model, BaseLlm) or unserved_need(model, self._subject) is None

    def _first_response_limit(self, key: str) -> tuple[float | None, bool]:
        """The seconds ``key`` may take to its first response, and whether the deadline sets them."""
        limit = self._settings.first_response_timeout.get(key)
        if self._expires is None:
            return limit, False
        remaining = max(self._expires - _loop_time(), 0.0)
        if limit is None or remaining < limit:
            return remaining, True
        return limit, False

    def _raise_deadline(self, key: str | None) -> NoReturn:
        """Raises :class:`DeadlineExceeded`, chained to the call's last model error."""
        deadline = self._settings.deadline
        assert deadline is not None  # Only called when a deadline is set.
        last = next(reversed(self._errors.values()), None)
        self._deadline_error = DeadlineExceeded(deadline, key=key)
        raise self._deadline_error from last

    def _roll_back(self) -> None:
        """Returns the request to the state the caller passed it in."""
        if self._snapshot is not None:
            self._snapshot.restore()

    async def _report_failover(self, key: str, attempt: int, error: Exception, next_key: str | None) -> None:
        """Counts the fallback, if any, and calls the ``on_failover`` hook."""
        if next_key is not None:
            observability.record_fallback(key, next_key)
        if self._settings.on_failover is not None:
            await observability.call_hook(
                self._settings.on_failover,
                FailoverEvent(key, self.name_of(key), attempt, error, next_key, self._elapsed()),
            )

    async def _announce(self, key: str, request: LlmRequest | None = None) -> Attempt:
        """Counts and reports the attempt about to be made on ``key``, and returns it.

        Args:
            key: The key chosen.
            request: The attempt's own copy of the request, in a race.
        """
        observability.record_attempt(key)
        health = self._settings.health
        if health is None:  # The common case: no permit to name.
            attempt = Attempt(key, health=None, permit="", request=request)
        else:
            attempt = Attempt(key, health=health, permit=self._permit, request=request)
            # Takes the trial when half-open, here and in the store; an unavailable pick is refused later.
            await attempt.take()
        if self._settings.on_route is not None:  # No event is built for nobody: this is the hot path.
            await observability.call_hook(
                self._settings.on_route,
                RouteEvent(
                    key, self.name_of(key), len(self._errors) + 1, tuple(self._errors), self._elapsed()
                ),
            )
        return attempt

    def _elapsed(self) -> float:
        return self._settings.clock() - self._started

    async def _ask(self, context: ErrorContext | None) -> str | None:
        """Calls the router, awaiting it if it is async, and checks its answer.

        While the router runs, :func:`annotate_route` writes to this call.
        """
        health, limits = self._settings.health, self._settings.limits
        if health is not None and health.store is not None:
            if limits is not None and limits.store is not None:
                candidates = self._candidates()
                await asyncio.gather(health.refresh(candidates), limits.refresh(candidates))
            else:
                await health.refresh(self._candidates())
        elif limits is not None and limits.store is not None:
            await limits.refresh(self._candidates())
        token = _notes.set(self._notes)
        health_token = _health.set(health)
        limits_token = _limits.set(limits)
        try:
            choice = self._settings.router(self._models, self._subject, context)
            if type(choice) is str:  # The common case, checked first: this is the hot path.
                return choice or None
            if inspect.isawaitable(choice):
                choice = await choice
        finally:
            _limits.reset(limits_token)
            _health.reset(health_token)
            _notes.reset(token)
        if choice is None or choice == "":
            return None
        if not isinstance(choice, str):
            raise RoutingError(
                f"The router returned {choice!r} ({type(choice).__name__}); a router returns "
                f"a key string from {self._key_list()}, or None to choose nothing.",
                key=None,
                available=tuple(self._models),
            )
        return choice

    def _candidates(self) -> list[str]:
        """The keys the router may pick: those it declares, else every routed key."""
        declared = getattr(self._settings.router, "declared_keys", None)
        return [key for key in self._models if not isinstance(declared, frozenset) or key in declared]

    def _check_known(self, key: str, *, cause: BaseException | None) -> None:
        """Raises :class:`RoutingError` if ``key`` is not a routed model."""
        if key not in self._models:
            raise RoutingError(
                f"The router chose {key!r}, which is not one of the routed {self._settings.label}s; "
                f"available keys: {self._key_list()}.",
                key=key,
                available=tuple(self._models),
            ) from cause

    def _key_list(self) -> str:
        return ", ".join(repr(key) for key in self._models)


class _Race:
    """The attempts of one call running side by side (``RoutedLlm(hedge_after=...)``).

    Attributes:
        open_stream: Starts a key's model on an attempt's request.
        running: Each running attempt, by its task.
        attempts: Every attempt started, in order.
        winner: The attempt that answered first, once one has.
        slow: The key each hedge was started beside, in order.
        hedges: The keys started by hedging, in order.
        delays: The :class:`~routed_llm.HedgeDelay` each hedged key was reported with.
    """

    __slots__ = ("attempts", "delays", "hedges", "open_stream", "running", "slow", "winner")

    def __init__(self, open_stream: Callable[[str, LlmRequest], AsyncGenerator[LlmResponse, None]]) -> None:
        self.open_stream = open_stream
        self.running: dict[asyncio.Task[None], Attempt] = {}
        self.attempts: list[Attempt] = []
        self.winner: Attempt | None = None
        self.slow: list[str] = []
        self.hedges: list[str] = []
        self.delays: dict[str, HedgeDelay] = {}

    async def close(self) -> None:
        """Cancels every attempt but the winner, all at once, then closes each; counts the hedges."""
        losers = [attempt for attempt in self.attempts if attempt is not self.winner]
        for attempt in losers:
            if attempt.task is not None:
                attempt.task.cancel()
        for attempt in losers:
            await attempt.close()
        for key in self.slow:
            observability.record_hedge(key, None if self.winner is None else self.winner.key)


def _answered(attempt: Attempt) -> bool:
    """Whether ``attempt``'s task, done, ended with an answer (not an error).

    Raises:
        asyncio.CancelledError: If the task was cancelled from within (the model cancelled it).
    """
    task = attempt.task
    assert task is not None
    if task.cancelled():
        raise asyncio.CancelledError(f"The attempt on {attempt.key!r} was cancelled.")
    return task.exception() is None


def _hedgeable(attempt: Attempt) -> bool:
    """Whether ``attempt`` will be due for a hedge: running, with a delay, no first response, no hedge yet."""
    return (
        attempt.hedge_at is not None
        and not attempt.hedged
        and attempt.first is None
        and attempt.task is not None
        and not attempt.task.done()
    )


def check_router(router: object, keys: Iterable[str], *, owner: str, signature: str) -> None:
    """Rejects, at construction, a router that cannot be called or that names unknown keys.

    Args:
        router: The router given to ``owner``.
        keys: The routed keys.
        owner: ``"RoutedLlm"`` or ``"RoutedAgent"``, for the messages.
        signature: How the router is called, e.g. ``"router(models, llm_request, error_context)"``.

    Raises:
        TypeError: If ``router`` is not callable, or cannot take the three
            positional arguments it is called with.
        ValueError: If ``router`` declares keys (``declared_keys``) that are not routed.
    """
    if not callable(router):
        raise TypeError(f"{owner}(router=...) must be callable as {signature}; got {type(router).__name__}.")
    if isinstance(router, type):
        raise TypeError(
            f"{owner}(router=...) got the class {router.__name__}; pass an instance, e.g. "
            f"{router.__name__}(...), or a function called as {signature}."
        )
    _check_arity(router, owner=owner, signature=signature)
    declared = getattr(router, "declared_keys", None)
    if isinstance(declared, frozenset):
        routed = list(keys)
        unknown = sorted(declared - set(routed))
        if unknown:
            what = "agents" if owner == "RoutedAgent" else "models"
            raise ValueError(
                f"The router can choose the keys {unknown}, which are not in {what} "
                f"({', '.join(repr(key) for key in routed)}). Add those {what} or change the router."
            )


def _check_arity(router: Callable[..., Any], *, owner: str, signature: str) -> None:
    """Rejects a router that cannot be called with three positional arguments.

    A router whose signature Python cannot read (some built-ins) is let through.
    """
    try:
        parameters = inspect.signature(router)
    except (TypeError, ValueError):
        return
    try:
        parameters.bind(None, None, None)
    except TypeError as error:
        name = getattr(router, "__name__", type(router).__name__)
        raise TypeError(
            f"{owner}(router=...) is called as {signature}, with three positional arguments, but the "
            f"router given is {name}{parameters} ({error}). Give it exactly those three parameters "
            "(extra ones need defaults)."
        ) from error


_NO_NOTES: Mapping[str, Any] = MappingProxyType({})


def check_callables(owner: str, **values: object) -> None:
    """Rejects, at construction, a hook (or clock) given to ``owner`` that cannot be called.

    Raises:
        TypeError: Naming the first argument that is neither None nor callable.
    """
    for name, value in values.items():
        if value is not None and not callable(value):
            raise TypeError(f"{owner}({name}=...) must be callable; got {type(value).__name__}.")


def _copy_with_metadata(response: _R, metadata: dict[str, Any]) -> _R:
    """A shallow copy of ``response`` with ``custom_metadata`` replaced.

    What ``response.model_copy(update=...)`` does, at about 40% of the
    cost: this runs once per streamed chunk. Pydantic keeps a model's state
    in four slots, written here through their descriptors.
    """
    copy = _new(type(response))
    state = response.__dict__.copy()
    state["custom_metadata"] = metadata
    _set_dict(copy, state)
    _set_fields_set(copy, response.__pydantic_fields_set__ | _CUSTOM_METADATA)
    extra = response.__pydantic_extra__
    _set_extra(copy, None if extra is None else dict(extra))
    private = response.__pydantic_private__
    _set_private(copy, None if private is None else dict(private))
    return copy


_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_CUSTOM_METADATA = frozenset({"custom_metadata"})


def _rank(rejection: ResponseRejected, held: list[LlmResponse]) -> int:
    """How strongly a rejected answer claims to be output: a refusal, a judged answer, an error or nothing."""
    if classify_error(rejection) == "request":
        return 2
    return 0 if is_error_response(rejection.response) or not any(map(shows_anything, held)) else 1


def _loop_time() -> float:
    """The running event loop's clock, which ``asyncio.timeout`` runs on."""
    return asyncio.get_running_loop().time()


def _from_cancellation(error: BaseException) -> bool:
    """Whether ``error`` is, or was raised while handling, an ``asyncio.CancelledError``."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        link = pending.pop()
        if link is None or id(link) in seen:
            continue
        seen.add(id(link))
        if isinstance(link, asyncio.CancelledError):
            return True
        pending += (link.__cause__, link.__context__)
    return False

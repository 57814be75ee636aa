"""Circuit breakers for routed models: keep traffic off a key that keeps failing.

A :class:`HealthTracker` follows the health of each key (a routed model, or a
deployment that several routed models name alike) from what the router loop
reports of each attempt, and says which keys may be tried:

* ``closed``: the key is tried as usual. ``failure_threshold`` consecutive
  transient failures open it; so does at once a failure that says how long
  to wait (``Retry-After``, ``RetryInfo``), or a provider error.
* ``open``: the key is out until its cooldown ends; then it is half-open.
* ``half_open``: one trial call at a time may go. Its success closes the
  circuit; its failure opens it again, for twice as long.

The loop's part, per attempt on ``key``::

    if not health.try_acquire(key):       # half-open, and its one trial is in flight
        ...                               # pick another key
    try:
        first = await first_response()
    except asyncio.CancelledError:
        health.release(key)               # no verdict
        raise
    except Exception as error:
        health.record_failure(key, error, classify_error(error))
        raise
    health.record_success(key)

and a strategy's: skip keys that are not :meth:`~HealthTracker.is_available`,
and when none is, try :meth:`~HealthTracker.soonest`.

Every change of state is logged (logger ``routed_llm.health``: WARNING when a
circuit opens, INFO otherwise), passed to the ``on_health_change`` hook as a
:class:`HealthChangeEvent`, and counted on the OpenTelemetry counter
``routed_llm.circuit_changes`` (attributes ``routed_llm.key`` and
``routed_llm.state``) of the meter ``routed_llm``.
"""

from __future__ import annotations

import email.utils
import inspect
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC
from typing import Literal, TypeAlias

from opentelemetry import metrics

from routed_llm.errors import (
    REFUSAL_CODES,
    BudgetExhausted,
    CircuitOpen,
    ErrorClass,
    ResponseRejected,
    _cause_chain,
    _refuses,
    classify_error,
    is_error_response,
)
from routed_llm.store import CircuitChange, CircuitOp, CircuitReading, SharedReads, Store

__all__ = [
    "CONTENT_CODES",
    "MAX_SHARED_SECONDS",
    "CircuitState",
    "HealthChangeEvent",
    "HealthChangeHook",
    "HealthTracker",
    "counts_against_health",
    "retry_after",
]

logger = logging.getLogger(__name__)

CircuitState: TypeAlias = Literal["closed", "open", "half_open"]
"""The state of one key's circuit; see :class:`HealthTracker`."""


@dataclass(frozen=True)
class HealthChangeEvent:
    """A key's circuit changed state.

    Attributes:
        key: The key whose circuit changed.
        previous: Its state before.
        state: Its state now.
        reason: Why, in words, e.g. ``"3 consecutive transient failures, the
            last ServerError"``. Never holds prompt or response text.
        cooldown: Seconds the key stays unavailable, when it opened; None for
            any other change.
        at: The tracker's clock reading when it made the change. The end of a
            cooldown is noticed lazily, at the first look at the key after it.
    """

    key: str
    previous: CircuitState
    state: CircuitState
    reason: str
    cooldown: float | None
    at: float


HealthChangeHook: TypeAlias = Callable[[HealthChangeEvent], None]
"""``on_health_change`` hook: a plain (not ``async``) callable taking a :class:`HealthChangeEvent`."""

_ERROR_CLASSES: frozenset[str] = frozenset({"transient", "provider", "request"})

_meter = metrics.get_meter("routed_llm")

MAX_SHARED_SECONDS = 1e9
"""The longest ``max_cooldown`` or ``trial_timeout`` a tracker with a store takes (about 31 years)."""

CONTENT_CODES = REFUSAL_CODES | frozenset(
    {
        "RECITATION",
        "IMAGE_RECITATION",
        "MAX_TOKENS",
        "MALFORMED_FUNCTION_CALL",
        "UNEXPECTED_TOOL_CALL",
        "TOO_MANY_TOOL_CALLS",
        "LANGUAGE",
    }
)
"""Error codes of an error response that the request's content caused: no verdict on the key's health."""

_MISSED_KEPT = 1000
"""Changes kept for a store that does not answer; the oldest are dropped beyond that."""

_LATE = 1e-6
"""The least age of a change told late: it marks the change as late to the store."""


def counts_against_health(error: BaseException) -> bool:
    """Whether a pre-output failure says something about the key's provider.

    Not: our own budget spent (:class:`~routed_llm.BudgetExhausted`), a key
    not tried because its circuit is open (:class:`~routed_llm.CircuitOpen`),
    and an error response the request's content caused: a refusal or a
    blocked prompt, or a code in :data:`CONTENT_CODES` (``RECITATION``,
    ``MAX_TOKENS``, ``MALFORMED_FUNCTION_CALL``, ...). These still fail over
    as the error policy says; they only leave the key's health alone.
    Everything else does count (see the "Error policy" page).

    Args:
        error: What the attempt raised.

    Returns:
        False for the failures above; True otherwise.
    """
    if isinstance(error, BudgetExhausted | CircuitOpen):
        return False
    if isinstance(error, ResponseRejected) and is_error_response(error.response):
        response = error.response
        code = str(getattr(response.error_code, "value", response.error_code))
        return not (code in CONTENT_CODES or _refuses(response))
    return True


def _circuit_counter(meter: metrics.Meter) -> metrics.Counter:
    return meter.create_counter(
        "routed_llm.circuit_changes", unit="{change}", description="Circuit state changes, by key and state."
    )


_circuit_changes = _circuit_counter(_meter)


class HealthTracker:
    """Per-key circuit breaker for routed models.

    The router loop reports each attempt: :meth:`try_acquire` before it,
    then :meth:`record_success` on a first response, :meth:`record_failure`
    on an error, or :meth:`release` when the attempt ended without a verdict
    (cancelled, or rejected by a judge). Strategies ask :meth:`is_available`,
    and :meth:`soonest` when no candidate is.

    * A transient failure counts against the key; ``failure_threshold``
      consecutive ones open its circuit for ``cooldown`` seconds. A request
      failure neither counts nor resets the count: it would fail on any
      model. A success resets it.
    * A transient failure that says how long to wait (:func:`retry_after`)
      opens the circuit at once, for that long, capped at ``max_cooldown``;
      a wait of 0 counts as an ordinary transient failure.
    * A provider failure (a bad key, a disabled API, a retired model) opens
      it at once for ``max_cooldown``.
    * When the cooldown ends the circuit is half-open: one trial call at a
      time may go. A success closes the circuit; a failure opens it again,
      for twice the cooldown before (each consecutive opening doubles it, up
      to ``max_cooldown``). A trial permit belongs to whoever took it: only
      its holder gives it back. One not given back within ``trial_timeout``
      seconds is presumed lost (with a crashed replica, say) and lapses, so
      a leaked permit cannot keep a key out for good.
    * An error response caused by the request's content (a refusal,
      ``RECITATION``, ``MAX_TOKENS``, ``MALFORMED_FUNCTION_CALL``; see
      :func:`counts_against_health`) is no verdict on the key: another model
      may be tried, but it says nothing about the provider.
    * While a circuit is open, failures are ignored (they come from attempts
      begun before it opened, or made anyway because every key was out):
      they neither lengthen its cooldown nor add to its backoff. Any success
      closes the circuit, whatever its state: the key served.

    One tracker may be shared by several routed models and across threads.
    A key never reported, or closed with no failures, costs one dict lookup
    per question.

    With a ``store`` (a :class:`~routed_llm.redis.RedisStore`), every
    process sharing the store's namespace shares the circuits: failures
    count across replicas, a circuit opens for all, and the half-open trial
    permit goes to one replica at a time. The tracker then keeps a local
    copy, which the routed model refreshes (:meth:`refresh`) before each
    router decision and falls back on when the store does not answer;
    changes the store missed are made when it answers again, unless the
    shared record changed after them. Shared cooldowns and permits run on
    the store's clock, so replicas' clocks need not agree (see the "Many
    replicas" page).

    Example::

        health = HealthTracker(failure_threshold=3, cooldown=30.0, max_cooldown=600.0)
        health.record_failure("primary", error, classify_error(error))
        health.state("primary")         # "closed", "open" or "half_open"
        health.is_available("primary")  # False while open or while its trial is in flight
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 3,
        cooldown: float = 30.0,
        max_cooldown: float = 600.0,
        trial_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_health_change: HealthChangeHook | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        store: Store | None = None,
    ) -> None:
        """Creates a tracker with every key closed.

        Args:
            failure_threshold: Consecutive transient failures that open a
                key's circuit.
            cooldown: Seconds a circuit first stays open; each consecutive
                reopening doubles it.
            max_cooldown: The longest a circuit stays open: the cap on the
                doubling and on a ``Retry-After``, and what a provider error
                opens it for.
            trial_timeout: Seconds after which a half-open trial permit
                that was never given back (its call lost with a crashed
                replica, say) lapses, and another trial may go.
            clock: Monotonic seconds; every cooldown runs on it.
            wall_clock: Seconds since the epoch, to turn a ``Retry-After``
                HTTP date into seconds to wait.
            on_health_change: Called with a :class:`HealthChangeEvent` on each
                change of state, from the thread that caused it and outside
                the tracker's lock. It must be a plain function: the
                tracker's methods are sync and never await. To do async work,
                schedule it (``loop.call_soon_threadsafe``). A hook that
                raises is logged and ignored.
            meter_provider: Where to count ``routed_llm.circuit_changes``;
                the global OpenTelemetry meter provider by default.
            store: A shared store (:class:`~routed_llm.redis.RedisStore`) to
                share circuits with every replica using its namespace; None
                to keep them in this process.

        Raises:
            TypeError: If an argument has the wrong type, or the hook is
                ``async``.
            ValueError: If ``failure_threshold`` is below 1, a duration is not
                a finite number above 0, ``max_cooldown`` is shorter than
                ``cooldown``, or with a store, a duration is longer than a
                store can keep (:data:`MAX_SHARED_SECONDS`).
        """
        self._rules = _Rules(
            failure_threshold=_threshold(failure_threshold),
            cooldown=_seconds("cooldown", cooldown),
            max_cooldown=_seconds("max_cooldown", max_cooldown),
            trial_timeout=_seconds("trial_timeout", trial_timeout),
        )
        if self._rules.max_cooldown < self._rules.cooldown:
            raise ValueError(
                f"HealthTracker(max_cooldown={max_cooldown!r}) is shorter than cooldown={cooldown!r}; "
                "max_cooldown caps the cooldown, so raise it to at least cooldown (or lower cooldown)."
            )
        if store is not None:
            for name, value in (("max_cooldown", max_cooldown), ("trial_timeout", trial_timeout)):
                if value > MAX_SHARED_SECONDS:
                    raise ValueError(
                        f"HealthTracker({name}={value!r}) is longer than a shared store can keep: its "
                        f"records expire in whole milliseconds. Use at most {MAX_SHARED_SECONDS:g} s "
                        "(about 31 years)."
                    )
        for name, function in (("clock", clock), ("wall_clock", wall_clock)):
            if not callable(function):
                raise TypeError(
                    f"HealthTracker({name}=...) must be a function returning seconds, like time.monotonic; "
                    f"got {type(function).__name__}."
                )
        if on_health_change is not None and not callable(on_health_change):
            raise TypeError(
                "HealthTracker(on_health_change=...) must be a function taking a HealthChangeEvent; "
                f"got {type(on_health_change).__name__}."
            )
        if inspect.iscoroutinefunction(on_health_change):
            raise TypeError(
                "HealthTracker(on_health_change=...) must be a plain function, not async: the tracker "
                "calls it synchronously. Schedule async work from it (loop.call_soon_threadsafe)."
            )
        self._clock = clock
        self._wall_clock = wall_clock
        self._on_health_change = on_health_change
        self._counter = (
            _circuit_changes
            if meter_provider is None
            else _circuit_counter(metrics.get_meter("routed_llm", meter_provider=meter_provider))
        )
        # Only keys with something to remember are stored; a missing key is closed and clean.
        # Records are immutable, so reads need no lock; every write goes through _apply.
        self._circuits: dict[str, _Circuit] = {}
        self._lock = threading.Lock()
        self._store = store
        self._process = uuid.uuid4().hex[:12]  # Names this tracker's permits in the store.
        self._trials: dict[str, str] = {}  # Key to the shared trial permit a call here holds.
        self._missed: list[tuple[str, CircuitChange, float]] = []  # Changes the store did not take.
        self._writes = 0  # Shared answers adopted so far; a read older than a key's last one is stale.
        self._written: dict[str, int] = {}
        self._reads = SharedReads()

    @property
    def store(self) -> Store | None:
        """The shared store of circuits, or None when they live in this process only."""
        return self._store

    def state(self, key: str) -> CircuitState:
        """The state of ``key``'s circuit now.

        Args:
            key: A routed key; one never reported is closed.

        Returns:
            ``"closed"``, ``"open"`` or ``"half_open"``.
        """
        return self._look(key).state

    def is_available(self, key: str) -> bool:
        """Whether ``key`` may be tried now.

        Args:
            key: A routed key; one never reported is available.

        Returns:
            False while its circuit is open, and while it is half-open with
            its one trial call in flight; True otherwise.
        """
        circuit = self._circuits.get(key)
        return circuit is None or self._look(key, circuit).available

    def available_at(self, key: str) -> float:
        """When ``key`` may next be tried, on the tracker's clock.

        Args:
            key: A routed key.

        Returns:
            The current clock reading if it is available now; the end of its
            cooldown if open; the lapse of the trial permit if its trial call
            is in flight.
        """
        now = self._clock()
        return self._look(key, now=now).available_from(now)

    def soonest(self, keys: Iterable[str]) -> str | None:
        """The key among ``keys`` that may be tried soonest.

        For "if every candidate is unavailable, the one whose cooldown ends
        soonest is tried": the first available key in the given order, else
        the one whose cooldown ends first (the earlier in ``keys`` on a tie).

        Args:
            keys: Candidate keys, in order of preference.

        Returns:
            One of ``keys``, or None if there are none.
        """
        now = self._clock()
        return min(keys, key=lambda key: self._look(key, now=now).available_from(now), default=None)

    def try_acquire(self, key: str, permit: str = "") -> bool:
        """Called by the loop before an attempt on ``key``: may it go ahead?

        On a half-open key this takes the one trial permit for ``permit``;
        give it back with a verdict (:meth:`record_success`,
        :meth:`record_failure`) or with :meth:`release` and the same
        ``permit``. On a closed or open key it takes nothing and always
        allows the attempt: keeping away from open keys is the strategies'
        choice (:meth:`is_available`), and the loop may try one anyway when
        every key is out.

        Args:
            key: The key about to be tried.
            permit: Who takes the trial permit (the routed call); only the
                same ``permit`` gives it back.

        Returns:
            False only if ``key`` is half-open with its trial already in
            flight; the attempt must not be made.
        """
        circuit = self._circuits.get(key)
        if circuit is None or circuit.state == "closed":
            return True
        holder = self._permit(permit)
        before, _ = self._apply(
            key, self._clock(), lambda circuit, now: self._rules.acquire(circuit, now, holder)
        )
        return not before.trial  # Only a half-open circuit has a trial in flight.

    def release(self, key: str, permit: str = "") -> None:
        """Gives back ``key``'s trial permit after an attempt with no verdict.

        For an attempt that was cancelled, or whose answer a judge rejected:
        the state is left as it was, and another trial may go. Does nothing
        when ``permit`` does not hold the trial: only its holder gives it back.

        Args:
            key: The key whose attempt ended.
            permit: Who took the permit, as given to :meth:`try_acquire`.
        """
        if key in self._circuits:
            holder = self._permit(permit)
            self._apply(key, self._clock(), lambda circuit, now: self._rules.release(circuit, now, holder))

    def record_success(self, key: str) -> None:
        """Reports that an attempt on ``key`` gave its first response.

        Resets the count of consecutive failures, and closes the circuit if it
        was open or half-open.

        Args:
            key: The key that answered.
        """
        if key in self._circuits:  # Fast path: a clean closed key has nothing to reset.
            self._apply(key, self._clock(), self._rules.succeed)

    def record_failure(
        self, key: str, error: BaseException, error_class: ErrorClass, permit: str = ""
    ) -> None:
        """Reports that an attempt on ``key`` failed before any response.

        Args:
            key: The key that failed.
            error: What it raised; read for how long it asks to wait
                (:func:`retry_after`) and named in the reason of a change.
                One that says nothing of the key
                (:func:`counts_against_health` is False) only gives the
                trial permit back.
            error_class: The failure's class, usually
                :func:`~routed_llm.classify_error` of ``error``:
                ``"transient"`` counts against the key (or opens it at once
                when the error says how long to wait), ``"provider"`` opens it
                at once for ``max_cooldown``, and ``"request"`` is no verdict
                on the key (a trial permit is given back).
            permit: Who made the attempt, as given to :meth:`try_acquire`.

        Raises:
            ValueError: If ``error_class`` is not one of the three classes.
        """
        if error_class not in _ERROR_CLASSES:
            raise ValueError(
                f"error_class must be 'transient', 'provider' or 'request' (see classify_error); "
                f"got {error_class!r}."
            )
        if not counts_against_health(error):
            self.release(key, permit)
            return
        if error_class == "request" and key not in self._circuits:
            return
        wait = retry_after(error, wall_clock=self._wall_clock) if error_class == "transient" else None
        what = type(error).__name__
        holder = self._permit(permit)
        self._apply(
            key,
            self._clock(),
            lambda circuit, now: self._rules.fail(circuit, now, error_class, wait, what, holder),
        )

    # The shared store. The loop calls these around the sync methods above, which keep the
    # local copy (and the fallback) up to date; each shared answer then replaces the local record.

    async def refresh(self, keys: Iterable[str]) -> None:
        """Brings the local copies of ``keys``' shared circuits up to date, in one trip.

        First makes the changes the store missed while it did not answer (each
        told how long ago it happened, so a record changed since wins). A
        key's record is not taken from a read that began before this tracker
        adopted a newer answer for it. Without a store, or when the store
        does not answer, the local state stays as it is.

        Args:
            keys: The keys the router may pick.
        """
        if self._store is not None:
            await self._reads.run(tuple(keys), self._read)

    async def _read(self, keys: tuple[str, ...]) -> None:
        assert self._store is not None
        if not await self._reconcile():
            return
        began = self._writes
        readings = await self._store.read_circuits(keys)
        if readings is None:
            return
        for key in keys:
            if self._written.get(key, 0) > began:
                continue  # A newer answer arrived while this read was out.
            reading = readings.get(key)
            if reading is None and key not in self._circuits:
                continue  # Closed and clean on both sides: the common case.
            self._adopt(key, reading.fields if reading is not None else {}, reading.now if reading else None)

    async def _take(self, key: str, permit: str) -> bool:
        """Takes what an attempt on ``key`` needs, here and in the store: is ``key`` available to it?

        Returns:
            True if the key is closed, or half-open and ``permit`` took its
            trial; False if it is open, or its trial is someone else's.
        """
        if not self.try_acquire(key, permit):
            return False
        circuit = self._circuits.get(key)
        if circuit is None or circuit.state == "closed":
            return True
        if circuit.state == "open":
            return False
        if self._store is None:
            return True
        self._writes += 1  # A read already out must not give the trial this call took back to others.
        self._written[key] = self._writes
        change = self._change("acquire", permit=permit)
        try:
            answer = await self._store.change_circuit(key, change)
        except BaseException:  # Cancelled with the answer out: Redis may have granted the trial.
            self.release(key, permit)
            self._later(key, self._change("release", permit=permit))
            raise
        if answer is None:  # The store did not answer: this process's permit decides, and is shared late.
            self._trials[key] = self._permit(permit)
            self._missed.append((key, change, self._clock()))
            del self._missed[:-_MISSED_KEPT]
            return True
        reading, granted = answer
        if granted:
            self._trials[key] = self._permit(permit)
        self._adopt_answer(key, reading)
        return granted or not reading.fields

    def _share_success(self, key: str) -> None:
        """Closes ``key``'s shared circuit in the background, if there is anything to reset.

        Call it before :meth:`record_success`, which forgets whether there was.
        """
        if self._store is not None and (key in self._circuits or key in self._trials):
            self._trials.pop(key, None)
            self._later(key, self._change("succeed"))

    def _share_release(self, key: str, permit: str) -> None:
        """Gives back ``key``'s shared trial permit in the background, if ``permit`` holds it."""
        if self._store is not None and self._trials.get(key) == self._permit(permit):
            del self._trials[key]
            self._later(key, self._change("release", permit=permit))

    async def _share_failure(self, key: str, error: BaseException, permit: str) -> None:
        """Records a pre-output failure of ``key`` in the store, and adopts the result."""
        if self._store is None:
            return
        if not counts_against_health(error):  # No verdict on the key, as in record_failure.
            self._share_release(key, permit)
            return
        if self._trials.get(key) == self._permit(permit):
            del self._trials[key]
        error_class = classify_error(error)
        wait = retry_after(error, wall_clock=self._wall_clock) if error_class == "transient" else None
        change = self._change("fail", error_class=error_class, wait=wait or 0.0, permit=permit)
        await self._write(key, change)

    def _later(self, key: str, change: CircuitChange) -> None:
        """Makes ``change`` in the store in the background."""
        assert self._store is not None
        self._store.background(self._write(key, change))

    async def _write(self, key: str, change: CircuitChange) -> None:
        """Makes ``change`` in the store and adopts the answer; keeps it for later if the store missed it."""
        assert self._store is not None
        if self._missed:  # Keep the order: this change comes after those the store missed.
            self._missed.append((key, change, self._clock()))
            return
        answer = await self._store.change_circuit(key, change)
        if answer is None:
            self._missed.append((key, change, self._clock()))
            del self._missed[:-_MISSED_KEPT]
        else:
            self._adopt_answer(key, answer[0])

    async def _reconcile(self) -> bool:
        """Makes the changes the store missed, oldest first; False if it still does not answer."""
        assert self._store is not None
        while self._missed:
            key, change, at = missed = self._missed.pop(
                0
            )  # Taken, so a concurrent read cannot make it twice.
            age = max(self._clock() - at, _LATE)
            try:
                answer = await self._store.change_circuit(key, replace(change, age=age))
            except BaseException:  # Cancelled: made again later; if it was made, told late it is dropped.
                self._missed.insert(0, missed)
                raise
            if answer is None:
                self._missed.insert(0, missed)
                return False
            self._adopt_answer(key, answer[0])
        return True

    def _change(
        self, op: CircuitOp, *, error_class: str = "", wait: float = 0.0, permit: str = ""
    ) -> CircuitChange:
        rules = self._rules
        return CircuitChange(
            op=op,
            failure_threshold=rules.failure_threshold,
            cooldown=rules.cooldown,
            max_cooldown=rules.max_cooldown,
            trial_timeout=rules.trial_timeout,
            permit=self._permit(permit) if op in ("acquire", "release", "fail") else "",
            error_class=error_class,
            wait=wait,
        )

    def _permit(self, permit: str) -> str:
        """The name of ``permit`` in the store: unique to this tracker's process."""
        return f"{self._process}:{permit}"

    def _adopt_answer(self, key: str, reading: CircuitReading) -> None:
        """Adopts the store's answer to a change of ``key``: newer than any read still out."""
        self._writes += 1
        self._written[key] = self._writes
        self._adopt(key, reading.fields, reading.now)

    def _adopt(self, key: str, fields: Mapping[str, str], store_now: float | None) -> None:
        """Makes the shared record of ``key`` (empty: closed and clean) the local one."""
        now = self._clock()
        shared = _from_fields(fields, now - (store_now if store_now is not None else 0.0))
        self._apply(
            key,
            now,
            lambda circuit, now: (shared, "as the shared store records it, from every replica's reports"),
        )

    def _look(self, key: str, circuit: _Circuit | None = None, *, now: float | None = None) -> _Circuit:
        """``key``'s circuit as it is now, noticing the end of a cooldown or a trial permit."""
        if circuit is None:
            circuit = self._circuits.get(key, _CLOSED)
        if not circuit.timed:
            return circuit
        now = self._clock() if now is None else now
        if now < circuit.until:
            return circuit
        return self._apply(key, now, _Rules.keep)[1]

    def _apply(self, key: str, now: float, step: _Step) -> tuple[_Circuit, _Circuit]:
        """Runs ``step`` on ``key``'s circuit atomically, then reports any change of state.

        The clock is applied first (a cooldown ended, a trial permit lapsed),
        so ``step`` sees the circuit as it is at ``now``.

        Returns:
            The circuit before ``step`` (at ``now``) and after it.
        """
        with self._lock:
            stored = self._circuits.get(key, _CLOSED)
            before, ended = self._rules.elapse(stored, now)
            after, reason = step(before, now)
            if after == _CLOSED:
                self._circuits.pop(key, None)
            else:
                self._circuits[key] = after
        # Reported outside the lock, so a hook may ask the tracker anything.
        if before.state != stored.state:
            self._report(key, stored.state, before, ended, now)
        if after.state != before.state:
            self._report(key, before.state, after, reason, now)
        return before, after

    def _report(self, key: str, previous: CircuitState, circuit: _Circuit, reason: str, now: float) -> None:
        """Logs, counts and hands to the hook one change of state."""
        cooldown = circuit.cooldown if circuit.state == "open" else None
        if cooldown is not None:
            logger.warning(
                "Model key %r is out for %g s (circuit %s -> open): %s.", key, cooldown, previous, reason
            )
        else:
            logger.info("Model key %r circuit %s -> %s: %s.", key, previous, circuit.state, reason)
        self._counter.add(1, {"routed_llm.key": key, "routed_llm.state": circuit.state})
        hook = self._on_health_change
        if hook is None:
            return
        try:
            result: object = hook(HealthChangeEvent(key, previous, circuit.state, reason, cooldown, now))
        except Exception:
            logger.exception("HealthTracker hook %r raised; ignored.", hook)
            return
        if inspect.iscoroutine(result):  # An object with an async __call__ slips past the check in __init__.
            result.close()
            logger.error("HealthTracker hook %r is async and was not run; pass a plain function.", hook)


# The state machine. Records are values, and every transition is a pure function of the
# record and the clock, so a shared store (Redis, with Lua for atomicity) can run the same
# rules on the same fields.


@dataclass(frozen=True, slots=True)
class _Circuit:
    """One key's circuit.

    Attributes:
        state: The circuit's state.
        failures: Consecutive transient failures, while closed.
        opens: Consecutive openings since the circuit last closed (the backoff's exponent).
        cooldown: How long the current (or last) opening lasts.
        until: While open, when the cooldown ends; while a trial is in flight, when its permit lapses.
        trial: While half-open with the one trial call in flight, who holds its permit; else "".
    """

    state: CircuitState = "closed"
    failures: int = 0
    opens: int = 0
    cooldown: float = 0.0
    until: float = 0.0
    trial: str = ""

    @property
    def timed(self) -> bool:
        """Whether ``until`` applies: the circuit changes on its own when the clock reaches it."""
        return self.state == "open" or bool(self.trial)

    @property
    def available(self) -> bool:
        """Whether an attempt may go now (assuming the clock has been applied)."""
        return self.state == "closed" or (self.state == "half_open" and not self.trial)

    def available_from(self, now: float) -> float:
        """When an attempt may go, given the clock has been applied at ``now``."""
        return now if self.available else self.until


_CLOSED = _Circuit()

_STATES: frozenset[str] = frozenset({"closed", "open", "half_open"})


def _from_fields(fields: Mapping[str, str], offset: float) -> _Circuit:
    """A shared record as a local circuit; ``offset`` turns the store's times into the tracker's clock."""
    state = fields.get("state", "closed")
    if not fields or state not in _STATES:
        return _CLOSED
    try:
        return _Circuit(
            state=state,  # type: ignore[arg-type]  # Checked against _STATES above.
            failures=int(float(fields.get("failures", "0"))),
            opens=int(float(fields.get("opens", "0"))),
            cooldown=float(fields.get("cooldown", "0")),
            until=float(fields.get("until", "0")) + offset,
            trial=fields.get("trial", "") if state == "half_open" else "",
        )
    except ValueError:  # A record this version cannot read counts as closed.
        return _CLOSED


_Step: TypeAlias = Callable[[_Circuit, float], tuple[_Circuit, str]]
"""A transition: the record and the clock in, the new record and the reason for a change out."""


@dataclass(frozen=True)
class _Rules:
    """The transitions of a circuit, under one tracker's settings."""

    failure_threshold: int
    cooldown: float
    max_cooldown: float
    trial_timeout: float

    @staticmethod
    def keep(circuit: _Circuit, now: float) -> tuple[_Circuit, str]:
        """No change, beyond the clock."""
        return circuit, ""

    def elapse(self, circuit: _Circuit, now: float) -> tuple[_Circuit, str]:
        """Applies the clock: a cooldown ends, a lost trial permit lapses."""
        if not circuit.timed or now < circuit.until:
            return circuit, ""
        if circuit.state == "open":
            return replace(circuit, state="half_open"), f"its cooldown of {circuit.cooldown:g} s ended"
        return replace(circuit, trial=""), ""  # A trial permit no one gave back.

    def acquire(self, circuit: _Circuit, now: float, holder: str) -> tuple[_Circuit, str]:
        """Takes the trial permit of a half-open circuit for ``holder``, if free."""
        if circuit.state != "half_open" or circuit.trial:
            return circuit, ""
        return replace(circuit, trial=holder, until=now + self.trial_timeout), ""

    @staticmethod
    def release(circuit: _Circuit, now: float, holder: str) -> tuple[_Circuit, str]:
        """Gives the trial permit back if ``holder`` holds it, leaving the state."""
        return (
            (replace(circuit, trial=""), "") if circuit.trial and circuit.trial == holder else (circuit, "")
        )

    def succeed(self, circuit: _Circuit, now: float) -> tuple[_Circuit, str]:
        """A first response: the key serves."""
        return _CLOSED, "a call succeeded"

    def fail(
        self, circuit: _Circuit, now: float, error_class: str, wait: float | None, what: str, holder: str
    ) -> tuple[_Circuit, str]:
        """A failure before any response of ``holder``'s attempt, of ``error_class``, asking to wait."""
        if error_class == "request" or circuit.state == "open":
            return self.release(circuit, now, holder)
        if error_class == "provider":
            reason = f"provider error {what}: this key cannot serve anyone"
            return self._open(circuit, now, self.max_cooldown), reason
        if wait:
            return self._open(circuit, now, min(wait, self.max_cooldown)), f"{what} asked to wait {wait:g} s"
        if circuit.state == "half_open":
            return self._open(circuit, now, self._backoff(circuit)), f"the trial call failed with {what}"
        failures = circuit.failures + 1
        if failures < self.failure_threshold:
            return replace(circuit, failures=failures), ""
        reason = f"{failures} consecutive transient failures, the last {what}"
        return self._open(circuit, now, self._backoff(circuit)), reason

    def _backoff(self, circuit: _Circuit) -> float:
        """The cooldown of the circuit's next opening: doubled for each opening since it closed."""
        # The exponent's cap keeps the float finite; a cooldown that large is capped anyway.
        return min(self.cooldown * 2.0 ** min(circuit.opens, 1000), self.max_cooldown)

    @staticmethod
    def _open(circuit: _Circuit, now: float, cooldown: float) -> _Circuit:
        return _Circuit("open", opens=circuit.opens + 1, cooldown=cooldown, until=now + cooldown)


def retry_after(error: BaseException, *, wall_clock: Callable[[], float] = time.time) -> float | None:
    """The seconds an error says to wait before trying again, if it says.

    The error and then each of its explicit causes (``raise ... from``) are
    read in turn; the first that says anything decides. In each, in order:

    * a ``retry-after-ms`` or ``Retry-After`` header (any case) in
      ``error.headers`` (aiohttp's ``ClientResponseError``, LiteLLM's own),
      ``error.response.headers`` (httpx's ``HTTPStatusError``, OpenAI,
      LiteLLM, google-genai) or ``error.litellm_response_headers`` (LiteLLM's
      mapped exceptions). ``Retry-After`` is seconds (``"12"``, ``"1.5"``) or
      an HTTP date, which is measured against ``wall_clock()``; a header
      sent more than once (``"5, 5"``) reads as its longest wait;
    * a ``google.rpc.RetryInfo`` in a google-genai ``APIError``'s
      ``details`` (the error JSON's ``error.details``), its ``retryDelay``
      a duration such as ``"30s"`` or ``"1.5s"``.

    An unreadable value says nothing. This function never raises.

    Args:
        error: The exception a model raised.
        wall_clock: Seconds since the epoch, for an HTTP date.

    Returns:
        Seconds to wait, 0.0 for a date already past; None if the error does
        not say.
    """
    for link in _cause_chain(error, set()):
        try:
            seconds = _header_delay(link, wall_clock)
            if seconds is None:
                seconds = _retry_info_delay(link)
        except Exception:  # Never raise from an error handler: some SDKs' attributes are properties.
            seconds = None
        if seconds is not None:
            return seconds
    return None


_SECONDS = re.compile(r"\d+(?:\.\d+)?")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)s")  # google.protobuf.Duration in JSON: "30s", "1.5s".


def _header_delay(error: BaseException, wall_clock: Callable[[], float]) -> float | None:
    """The wait in the first headers ``error`` carries that have one."""
    for headers in (
        getattr(error, "headers", None),
        getattr(getattr(error, "response", None), "headers", None),
        getattr(error, "litellm_response_headers", None),
    ):
        if not isinstance(headers, Mapping):
            continue
        values = {str(name).lower(): str(value).strip() for name, value in headers.items()}
        milliseconds = values.get("retry-after-ms", "")
        if _SECONDS.fullmatch(milliseconds):
            return float(milliseconds) / 1000
        value = values.get("retry-after", "")
        repeated = [part.strip() for part in value.split(",")]  # A header sent twice arrives joined.
        if all(_SECONDS.fullmatch(part) for part in repeated):
            return max(float(part) for part in repeated)
        if value:
            return _until_date(value, wall_clock)
    return None


def _until_date(value: str, wall_clock: Callable[[], float]) -> float | None:
    """Seconds from ``wall_clock()`` to an HTTP date; None if ``value`` is not one."""
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT.
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - wall_clock(), 0.0)


def _retry_info_delay(error: BaseException) -> float | None:
    """The ``retryDelay`` of a ``google.rpc.RetryInfo`` in a google-genai error's details."""
    details = getattr(error, "details", None)
    if isinstance(details, dict):
        body = details.get("error", details)
        details = body.get("details") if isinstance(body, dict) else None
    if not isinstance(details, list):
        return None
    for item in details:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.fullmatch(str(item.get("retryDelay", "")).strip())
            if match:
                return float(match[1])
    return None


def _threshold(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            "HealthTracker(failure_threshold=...) is a whole number of consecutive failures, like 3; "
            f"got {value!r} ({type(value).__name__})."
        )
    if value < 1:
        raise ValueError(
            f"HealthTracker(failure_threshold={value!r}) must be at least 1: the number of "
            "consecutive transient failures that open a key's circuit."
        )
    return value


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"HealthTracker({name}=...) is a number of seconds, like 30.0; "
            f"got {value!r} ({type(value).__name__})."
        )
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"HealthTracker({name}={value!r}) must be a finite number of seconds above 0.")
    return float(value)

"""Where health and rate budgets live when replicas share them.

A :class:`~routed_llm.HealthTracker` and :class:`~routed_llm.RateLimits`
always keep their own state in the process: that is all a single process
needs, with nothing to set up. Given a ``store`` (a
:class:`~routed_llm.redis.RedisStore`), every process sharing the store's
namespace sees the same circuits and budgets: each tracker reads its own
records before the router decides, and the store applies every change
atomically. The process's own state is then a copy of the shared one, and
what the process falls back on when the store cannot answer; each tracker
reconciles what it missed when the store answers again.

:class:`Store` is what a backend provides; it knows nothing of the trackers.
Its methods never raise: a store that cannot answer in time returns None and
the caller goes on with its local state. Times in the store are the store's
own clock, so replicas whose clocks disagree still agree on every cooldown.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeAlias

__all__ = [
    "BudgetChange",
    "BudgetReading",
    "CircuitChange",
    "CircuitOp",
    "CircuitReading",
    "SharedReads",
    "Store",
    "check_key",
    "check_namespace",
]

CircuitOp: TypeAlias = Literal["acquire", "release", "succeed", "fail"]
"""A change to a circuit: take the half-open trial, give it back, a success, a failure."""


@dataclass(frozen=True, kw_only=True)
class CircuitChange:
    """One change to a key's shared circuit, with the rules to apply it by.

    The store runs the :class:`~routed_llm.HealthTracker`'s state machine on
    the stored record atomically, on its own clock: first the clock (a
    cooldown ends, a trial permit lapses), then ``op``.

    Attributes:
        op: What happened.
        failure_threshold: Consecutive transient failures that open the circuit.
        cooldown: Seconds the circuit first stays open.
        max_cooldown: The cap on a cooldown.
        trial_timeout: Seconds a trial permit lives if it is never given back.
        permit: For ``"acquire"`` and ``"release"``: who takes or gives back
            the trial permit; only its holder can give it back.
        error_class: For ``"fail"``: ``"transient"``, ``"provider"`` or ``"request"``.
        wait: For ``"fail"``: seconds the error asked to wait; 0 if it did not say.
        age: Seconds since it happened: above 0 for a change the store missed
            and is told late. A late change is dropped if the record changed
            after it happened: newer knowledge wins. A cooldown it opens runs
            from when it happened, so one already over leaves the circuit
            half-open.
    """

    op: CircuitOp
    failure_threshold: int
    cooldown: float
    max_cooldown: float
    trial_timeout: float
    permit: str = ""
    error_class: str = ""
    wait: float = 0.0
    age: float = 0.0


@dataclass(frozen=True)
class CircuitReading:
    """A key's circuit record as stored, and the store's clock when it was read.

    Attributes:
        fields: Field name to text; empty when the circuit is closed with no failures.
        now: The store's clock, in seconds, when it was read: times in
            ``fields`` are on this clock.
    """

    fields: Mapping[str, str]
    now: float


@dataclass(frozen=True, kw_only=True)
class BudgetChange:
    """One request to reserve in a key's window, with what the caller knows of the window.

    Attributes:
        window: The window (whole minutes of the wall clock).
        rpm: The request limit, or None.
        tpm: The token limit, or None.
        requests: The requests the caller knows were counted in the window;
            the store's count is raised to it first (a restarted store
            forgets), so a count never goes backwards.
        tokens: The same, for tokens.
        owed_requests: Requests the caller admitted while the store did not
            answer, added to the count first.
        owed_tokens: Tokens it spent while the store did not answer.
        reserve: Whether to reserve one request (False: only bring the
            counts up to date).
    """

    window: int
    rpm: int | None
    tpm: int | None
    requests: int = 0
    tokens: int = 0
    owed_requests: int = 0
    owed_tokens: int = 0
    reserve: bool = True


@dataclass(frozen=True)
class BudgetReading:
    """A key's counts in one window, after a read or a change.

    Attributes:
        requests: Requests counted.
        tokens: Tokens counted.
        replicas: Replicas (processes) that reserved in this window or the last;
            0 if none did.
        reserved: For a change that reserves: whether the request was counted.
    """

    requests: int
    tokens: int
    replicas: int = 0
    reserved: bool = False


class Store(Protocol):
    """A shared store of circuits and rate budgets (see :class:`~routed_llm.redis.RedisStore`).

    No method raises: when the store cannot answer within its time limit,
    reads and changes return None, so the caller goes on with its local state.
    """

    def check_key(self, key: str) -> None:
        """Raises ValueError if ``key`` cannot name a record in this store."""

    async def read_circuits(self, keys: Sequence[str]) -> Mapping[str, CircuitReading] | None:
        """Reads the circuits of ``keys`` in one trip (a key closed and clean may be left out)."""

    async def change_circuit(self, key: str, change: CircuitChange) -> tuple[CircuitReading, bool] | None:
        """Applies ``change`` to ``key``'s circuit atomically.

        Returns:
            The record after the change, and whether an ``"acquire"`` took the
            trial permit; None if the store did not answer.
        """

    async def read_budgets(self, keys: Sequence[str], window: int) -> Mapping[str, BudgetReading] | None:
        """Reads the counts of ``keys`` in ``window``, in one trip."""

    async def change_budget(self, key: str, change: BudgetChange) -> BudgetReading | None:
        """Raises ``key``'s counts to what ``change`` knows, then reserves a request if the limits allow."""

    def background(self, work: Coroutine[Any, Any, object]) -> None:
        """Runs ``work`` without the caller waiting; ``drain`` waits for it."""

    async def share_samples(
        self, new: Mapping[str, Sequence[float]], keys: Sequence[str], window: int
    ) -> Mapping[str, Sequence[float]] | None:
        """Adds ``new`` to each key's shared latency samples, then reads the samples of ``keys``.

        Each key keeps its ``window`` newest samples; the list expires when
        no sample was added for a while, on the store's own clock.

        Returns:
            Each of ``keys``' shared samples, oldest first (empty for a key
            with none); None if the store did not answer.
        """


class SharedReads:
    """One read at a time per event loop and set of keys: calls that ask meanwhile share its result.

    A burst of calls then costs the store one read, not one each; a call that
    joins a read already out sees what the store held when that read began.
    """

    def __init__(self) -> None:
        self._running: dict[tuple[int, tuple[str, ...]], asyncio.Future[None]] = {}

    async def run(self, keys: tuple[str, ...], read: Callable[[tuple[str, ...]], Awaitable[None]]) -> None:
        """Runs ``read(keys)``, or waits for the read of ``keys`` already running in this event loop."""
        loop = asyncio.get_running_loop()
        slot = (id(loop), keys)
        running = self._running.get(slot)
        if running is not None:
            await asyncio.shield(running)
            return
        self._running[slot] = done = loop.create_future()
        try:
            await read(keys)
        finally:
            del self._running[slot]
            done.set_result(None)


_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,127}")


def check_namespace(namespace: object) -> str:
    """Returns ``namespace`` if it is a valid store namespace.

    Raises:
        TypeError: If it is not a string.
        ValueError: If it is not 1-64 letters, digits, ``_``, ``.`` or ``-``,
            beginning with a letter or digit.
    """
    if not isinstance(namespace, str):
        raise TypeError(f"namespace is a string such as 'support-bot'; got {type(namespace).__name__}.")
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(
            f"namespace={namespace!r} is not valid: use 1-64 letters, digits, '_', '.' or '-', "
            "beginning with a letter or digit, e.g. 'support-bot'. Every replica that should share "
            "health and budgets uses the same namespace."
        )
    return namespace


def check_key(key: object) -> str:
    """Returns ``key`` if a shared store can record it.

    Raises:
        ValueError: If it is not 1-128 letters, digits, ``_``, ``.``, ``:``,
            ``/``, ``@`` or ``-``, beginning with a letter or digit.
    """
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ValueError(
            f"The model key {key!r} cannot be recorded in a shared store: keys shared across "
            "replicas are 1-128 letters, digits, '_', '.', ':', '/', '@' or '-', beginning with "
            "a letter or digit. Rename the key in RoutedLlm(models=...) and in the limits."
        )
    return key

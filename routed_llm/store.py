"""Where health and rate budgets live when replicas share them.

A :class:`~routed_llm.HealthTracker` and :class:`~routed_llm.RateLimits`
always keep their own state in the process: that is all a single process
needs, with nothing to set up. Given a ``store`` (a
:class:`~routed_llm.redis.RedisStore`), every process sharing the store's
namespace sees the same circuits and budgets: each routed call reads them
before the router decides, and the store applies every change atomically.
The process's own state is then a copy of the shared one, and what the
process falls back on when the store cannot answer.

:class:`Store` is what a backend provides. Its methods never raise: a store
that cannot answer in time returns None (or drops a write) and the caller
goes on with its local state.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypeAlias

if TYPE_CHECKING:
    from routed_llm.health import HealthTracker
    from routed_llm.limits import RateLimits

__all__ = ["CircuitChange", "CircuitOp", "Store", "StoreReading", "check_key", "check_namespace"]

CircuitOp: TypeAlias = Literal["acquire", "release", "succeed", "fail"]
"""A change to a circuit: take the half-open trial, give it back, a success, a failure."""


@dataclass(frozen=True, kw_only=True)
class CircuitChange:
    """One change to a key's shared circuit, with the rules to apply it by.

    The store runs the :class:`~routed_llm.HealthTracker`'s state machine on
    the stored record atomically: first the clock (a cooldown ends, a trial
    permit lapses), then ``op``.

    Attributes:
        op: What happened.
        now: Seconds since the epoch: replicas share the wall clock, not a
            monotonic one.
        failure_threshold: Consecutive transient failures that open the circuit.
        cooldown: Seconds the circuit first stays open.
        max_cooldown: The cap on a cooldown, and the lifetime of a trial permit.
        error_class: For ``"fail"``: ``"transient"``, ``"provider"`` or ``"request"``.
        wait: For ``"fail"``: seconds the error asked to wait; 0 if it did not say.
    """

    op: CircuitOp
    now: float
    failure_threshold: int
    cooldown: float
    max_cooldown: float
    error_class: str = ""
    wait: float = 0.0


@dataclass(frozen=True)
class StoreReading:
    """What one read of the store returned.

    Attributes:
        circuits: Each asked key's circuit record, as stored (field name to
            text); a key that is closed with no failures is left out.
        budgets: For each asked key, the requests and tokens counted in the
            asked window.
    """

    circuits: Mapping[str, Mapping[str, str]]
    budgets: Mapping[str, tuple[int, int]]


class Store(Protocol):
    """A shared store of circuits and rate budgets (see :class:`~routed_llm.redis.RedisStore`).

    No method raises: when the store cannot answer within its time limit,
    reads and changes return None and writes are dropped, so the caller goes
    on with its local state.
    """

    def check_key(self, key: str) -> None:
        """Raises ValueError if ``key`` cannot name a record in this store."""

    async def read(self, circuits: Sequence[str], budgets: Sequence[str], window: int) -> StoreReading | None:
        """Reads the circuits of ``circuits`` and the budgets of ``budgets`` in ``window``, in one trip."""

    async def change_circuit(self, key: str, change: CircuitChange) -> tuple[Mapping[str, str], bool] | None:
        """Applies ``change`` to ``key``'s circuit atomically.

        Returns:
            The record after the change (empty when closed with no failures),
            and whether an ``"acquire"`` took the trial permit; None if the
            store did not answer.
        """

    def change_circuit_later(self, key: str, change: CircuitChange) -> None:
        """Applies ``change`` in the background; the caller does not wait."""

    async def reserve(self, key: str, window: int, rpm: int | None, tpm: int | None) -> bool | None:
        """Counts one request for ``key`` in ``window`` atomically, if its budget allows.

        Returns:
            True if reserved; False if the window's requests reached ``rpm``
            or its tokens reached ``tpm`` (nothing counted); None if the store
            did not answer.
        """

    def spend_later(self, key: str, window: int, tokens: int) -> None:
        """Adds ``tokens`` to ``key``'s count in ``window``, in the background."""

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


async def refresh(health: HealthTracker | None, limits: RateLimits | None, keys: Iterable[str]) -> None:
    """Brings the local copies of shared circuits and budgets up to date for ``keys``.

    One read per store: when health and limits share a store, it is one
    pipelined round trip for both. Local state is kept when a store does not
    answer.
    """
    health_store = health.store if health is not None else None
    limits_store = limits.store if limits is not None else None
    keys = tuple(keys)
    budget_keys = limits._limited(keys) if limits is not None and limits_store is not None else ()
    window = limits._window() if limits is not None else 0
    if health is not None and health_store is not None:
        shared = health_store is limits_store
        reading = await health_store.read(keys, budget_keys if shared else (), window)
        if reading is not None:
            health._absorb(keys, reading.circuits)
            if shared and limits is not None:
                limits._absorb(window, reading.budgets)
        if shared:
            return
    if limits is not None and limits_store is not None and budget_keys:
        reading = await limits_store.read((), budget_keys, window)
        if reading is not None:
            limits._absorb(window, reading.budgets)

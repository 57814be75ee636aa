"""Rate budgets: requests and tokens per minute for each key.

Providers limit requests per minute (RPM) and tokens per minute (TPM) per
key or project. :class:`RateLimits` counts both for each routed key in
minute windows, and a key whose budget for the current minute is spent is
unavailable to strategies (``ctx.is_available``), like an open circuit, until
the minute ends::

    limits = RateLimits({"flash": Limit(rpm=1000, tpm=2_000_000), "pro": Limit(rpm=60)})
    llm = RoutedLlm(models=..., router=FallbackStrategy(["pro", "flash"]), limits=limits)

Before each attempt on a limited key the routed model reserves one request;
if the budget is spent by then, the attempt fails before output with
:class:`~routed_llm.BudgetExhausted` and the router picks again. Tokens are
read from the responses' ``usage_metadata`` and counted when the response
ends. Without a ``store`` the budgets are this process's; with a
:class:`~routed_llm.redis.RedisStore` every replica shares them.

With a store, a process's count of a window never goes backwards: it keeps
the larger of its own count and the store's (a restarted Redis forgets), and
brings the store up to it. When the store does not answer a reservation, the
process admits at most its share of the limit in that window: the limit
divided by the replicas that reserved in this minute or the last, as last
read from the store; nothing if it never read that. What it admitted then is
added to the store's count when the store answers again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from google.adk.models.llm_response import LlmResponse

from routed_llm.errors import BudgetExhausted
from routed_llm.store import BudgetChange, BudgetReading, SharedReads, Store, check_key

__all__ = ["WINDOW", "Limit", "RateLimits"]

logger = logging.getLogger(__name__)

WINDOW = 60.0
"""The length of a budget's window, in seconds: budgets are per minute."""


@dataclass(frozen=True, kw_only=True)
class Limit:
    """One key's budget per minute.

    Attributes:
        rpm: Requests per minute, or None for no request limit.
        tpm: Tokens per minute (``usage_metadata.total_token_count``), or
            None for no token limit. Tokens are counted when a response
            ends, so the calls in flight when the budget runs out may take a
            window past it by their own size; no call starts after that.
    """

    rpm: int | None = None
    tpm: int | None = None

    def __post_init__(self) -> None:
        for name, value in (("rpm", self.rpm), ("tpm", self.tpm)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(
                    f"Limit({name}=...) is a whole number per minute, like 60; "
                    f"got {value!r} ({type(value).__name__})."
                )
            if value < 1:
                raise ValueError(f"Limit({name}={value!r}) must be at least 1 (or None for no limit).")
        if self.rpm is None and self.tpm is None:
            raise ValueError("Limit() sets no budget: give rpm=, tpm= or both, e.g. Limit(rpm=60).")


@dataclass(slots=True)
class _Count:
    """What one key spent in one window, as this process knows it."""

    window: int
    shared_requests: int = 0  # The most the store (or, without one, this process) counted.
    shared_tokens: int = 0
    owed_requests: int = 0  # Admitted while the store did not answer, not yet added to it.
    owed_tokens: int = 0
    sending_requests: int = 0  # Owed counts on their way to the store.
    sending_tokens: int = 0
    own_requests: int = 0  # This process's own admissions, for its share during an outage.
    own_tokens: int = 0

    @property
    def requests(self) -> int:
        return self.shared_requests + self.owed_requests

    @property
    def tokens(self) -> int:
        return self.shared_tokens + self.owed_tokens


class RateLimits:
    """Requests- and tokens-per-minute budgets of routed keys.

    Keys not named have no budget. Windows are whole minutes of ``clock``,
    which every replica sharing a store reads alike (the wall clock). A key
    whose requests reached ``rpm``, or whose tokens reached ``tpm``, in the
    current window is unavailable until the window ends.

    One instance may serve several routed models and threads.

    Example::

        limits = RateLimits({"flash": Limit(rpm=1000, tpm=2_000_000), "pro": Limit(rpm=60)})
        limits.is_available("pro")  # False once 60 requests went to "pro" this minute
    """

    def __init__(
        self,
        limits: Mapping[str, Limit],
        *,
        store: Store | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Creates the budgets, nothing spent.

        Args:
            limits: Each limited key's :class:`Limit`.
            store: A shared store (:class:`~routed_llm.redis.RedisStore`) to
                share the budgets with every replica using its namespace;
                None to count in this process only.
            clock: Seconds since the epoch; windows are its whole minutes.

        Raises:
            TypeError: If ``limits`` is not a mapping of key to
                :class:`Limit`, or ``clock`` is not callable.
            ValueError: If ``limits`` is empty, or with a store, a key the
                store cannot record.
        """
        if not isinstance(limits, Mapping):
            raise TypeError(
                "RateLimits(limits) takes a mapping of key to Limit, like "
                f"{{'pro': Limit(rpm=60)}}; got {type(limits).__name__}."
            )
        if not limits:
            raise ValueError("RateLimits({}) limits nothing; name at least one key and its Limit.")
        for key, limit in limits.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"RateLimits keys are non-empty model keys; got {key!r}.")
            if not isinstance(limit, Limit):
                raise TypeError(
                    f"RateLimits: the budget of {key!r} is a {type(limit).__name__}; "
                    "use Limit(rpm=..., tpm=...)."
                )
            if store is not None:
                check_key(key)
        if not callable(clock):
            raise TypeError(
                f"RateLimits(clock=...) must be a function like time.time; got {type(clock).__name__}."
            )
        self._limits: Mapping[str, Limit] = MappingProxyType(dict(limits))
        self._store = store
        self._clock = clock
        self._counts: dict[str, _Count] = {}
        self._lock = threading.Lock()
        self._replicas = 0  # Replicas that reserved recently, as last read from the store; 0: unknown.
        self._reads = SharedReads()

    @property
    def limits(self) -> Mapping[str, Limit]:
        """Each limited key's budget (read-only)."""
        return self._limits

    @property
    def store(self) -> Store | None:
        """The shared store of budgets, or None when they are counted in this process."""
        return self._store

    def is_available(self, key: str) -> bool:
        """Whether ``key`` has budget left in the current window.

        With a store, this answers from the counts read before the router
        was asked, plus what this process spent since.

        Args:
            key: A routed key; one without a limit is always available.

        Returns:
            False if its requests reached ``rpm`` or its tokens reached
            ``tpm`` in this window.
        """
        limit = self._limits.get(key)
        if limit is None:
            return True
        count = self._counts.get(key)
        return count is None or count.window != self._window() or _within(limit, count)

    async def refresh(self, keys: Iterable[str]) -> None:
        """Brings this process's counts of ``keys``' budgets up to date from the store, in one trip.

        Each count becomes the larger of this process's and the store's; a
        store that counts less (it restarted, or missed what this process
        admitted while it did not answer) is brought up to it in the
        background. Without a store, or when it does not answer, nothing
        changes.

        Args:
            keys: The keys the router may pick; those without a limit are skipped.
        """
        limited = tuple(key for key in keys if key in self._limits)
        if self._store is not None and limited:
            await self._reads.run(limited, self._read)

    async def _read(self, limited: tuple[str, ...]) -> None:
        assert self._store is not None
        window = self._window()
        readings = await self._store.read_budgets(limited, window)
        if readings is None:
            return
        behind = []
        with self._lock:
            for key, reading in readings.items():
                count = self._count(key, window)
                if (
                    reading.requests < count.shared_requests
                    or reading.tokens < count.shared_tokens
                    or count.owed_requests
                    or count.owed_tokens
                ):
                    behind.append(key)
                self._absorb(count, reading)
        for key in behind:
            self._store.background(self._sync(key, window, reserve=False))

    def _window(self) -> int:
        return int(self._clock() // WINDOW)

    def _count(self, key: str, window: int) -> _Count:
        """``key``'s count of ``window``: a minute already over, told late, never replaces the current one."""
        count = self._counts.get(key)
        if count is None or count.window < window:
            count = self._counts[key] = _Count(window)
        elif count.window > window:
            if window != self._window():
                return _Count(window)  # Kept by nobody: the minute is over.
            count = self._counts[key] = _Count(window)  # The clock went back.
        return count

    def _absorb(self, count: _Count, reading: BudgetReading) -> None:
        """Takes the store's counts where they are larger (call with the lock held)."""
        count.shared_requests = max(count.shared_requests, reading.requests)
        count.shared_tokens = max(count.shared_tokens, reading.tokens)
        if reading.replicas:
            self._replicas = reading.replicas

    async def _sync(self, key: str, window: int, *, reserve: bool) -> BudgetReading | None:
        """Brings the store's counts of ``key`` up to this process's, and reserves one request if asked.

        Returns:
            The store's answer, or None if it did not answer.
        """
        assert self._store is not None
        limit = self._limits[key]
        with self._lock:
            count = self._count(key, window)
            requests = count.owed_requests - count.sending_requests
            tokens = count.owed_tokens - count.sending_tokens
            count.sending_requests += requests
            count.sending_tokens += tokens
            change = BudgetChange(
                window=window,
                rpm=limit.rpm,
                tpm=limit.tpm,
                requests=count.shared_requests,
                tokens=count.shared_tokens,
                owed_requests=requests,
                owed_tokens=tokens,
                reserve=reserve,
            )
        reading = None
        try:
            reading = await self._store.change_budget(key, change)
        finally:  # Cancelled too: what it carried is owed still, and sent again.
            with self._lock:
                count.sending_requests -= requests
                count.sending_tokens -= tokens
        with self._lock:
            if reading is not None:
                count.owed_requests -= requests
                count.owed_tokens -= tokens
                self._absorb(count, reading)
        return reading

    async def _reserve(self, key: str) -> None:
        """Counts one request for ``key`` before an attempt, atomically in the store if there is one.

        Raises:
            BudgetExhausted: If the window's budget is spent, or while the
                store does not answer, this process's share of it.
        """
        limit = self._limits.get(key)
        if limit is None:
            return
        now = self._clock()
        window = int(now // WINDOW)
        reading = None if self._store is None else await self._sync(key, window, reserve=True)
        with self._lock:
            count = self._count(key, window)
            if reading is not None:
                reserved = reading.reserved
            elif self._store is None:
                reserved = _within(limit, count)
                count.shared_requests += reserved
            else:  # The store did not answer: this process's share of the budget decides.
                reserved = _within(limit, count) and _within_share(limit, count, self._replicas)
                count.owed_requests += reserved
            count.own_requests += reserved
        if not reserved:
            logger.info("Model key %r spent its rate budget for this minute.", key)
            raise BudgetExhausted(key, (window + 1) * WINDOW - now)

    def _metered(
        self, key: str, responses: AsyncGenerator[LlmResponse, None]
    ) -> AsyncGenerator[LlmResponse, None]:
        """``responses``, counting their tokens against ``key`` when they end, if it is limited."""
        limit = self._limits.get(key)
        if limit is None or limit.tpm is None:
            return responses
        return self._count_tokens(key, responses)

    async def _count_tokens(
        self, key: str, responses: AsyncGenerator[LlmResponse, None]
    ) -> AsyncGenerator[LlmResponse, None]:
        tokens = 0
        try:
            async for response in responses:
                usage = response.usage_metadata
                if usage is not None:  # Streams report the running total; the last one counts.
                    tokens = usage.total_token_count or (
                        (usage.prompt_token_count or 0) + (usage.candidates_token_count or 0)
                    )
                yield response
        finally:
            try:
                await responses.aclose()
            finally:
                if tokens:
                    self._spend(key, tokens)

    def _spend(self, key: str, tokens: int) -> None:
        """Counts ``tokens`` against ``key``: locally now, in the store in the background."""
        window = self._window()
        with self._lock:
            count = self._count(key, window)
            count.own_tokens += tokens
            if self._store is None:
                count.shared_tokens += tokens
                return
            count.owed_tokens += tokens
        self._store.background(self._sync(key, window, reserve=False))


def _within(limit: Limit, count: _Count) -> bool:
    return (limit.rpm is None or count.requests < limit.rpm) and (
        limit.tpm is None or count.tokens < limit.tpm
    )


def _within_share(limit: Limit, count: _Count, replicas: int) -> bool:
    """Whether this process's own spending in the window is under its share of the limit.

    With ``replicas`` unknown (0: the store never answered), there is no share: nothing is admitted.
    """
    if not replicas:
        return False
    return (limit.rpm is None or count.own_requests < limit.rpm // replicas) and (
        limit.tpm is None or count.own_tokens < limit.tpm // replicas
    )

"""Recent times to first response per key, for latency-aware routing.

A :class:`LatencyTracker` keeps, for each key, the times to first response of
its most recent successful attempts, and answers quantiles of them::

    latency = LatencyTracker(window=200, min_samples=20)
    llm = RoutedLlm(models=..., router=FastestFirst(["flash", "pro"], latency=latency), latency=latency)
    latency.quantile("flash", 0.95)  # seconds, or None before 20 samples

``RoutedLlm(latency=...)`` records every attempt whose first response is an
answer (not an error response), timed on the tracker's ``clock`` from the
moment the model is called to its first response.
:class:`~routed_llm.strategies.FastestFirst` routes on the quantiles.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from google.adk.models.llm_response import LlmResponse

from routed_llm._text import shows_anything
from routed_llm.errors import is_error_response
from routed_llm.store import Store

__all__ = ["LatencyTracker"]

logger = logging.getLogger(__name__)

_R = TypeVar("_R", bound=LlmResponse)


class LatencyTracker:
    """Each key's recent times to first response, and their quantiles.

    Memory is bounded: the tracker holds at most ``window`` samples per key
    (the newest; each new one pushes the oldest out), exact values rather
    than a sketch, so a quantile is exact over the window.
    :meth:`quantile` answers None for a key with fewer than ``min_samples``
    samples.

    With a ``store`` (a :class:`~routed_llm.redis.RedisStore`), every
    process sharing the store's namespace shares the samples: each key's
    ``window`` newest samples from every replica live in one capped list in
    the store. After each recorded sample, one background trip at a time
    sends what this process recorded and reads back every key it knows; the
    tracker answers from that copy, so a call never waits for the store. A
    shared list expires an hour after its last sample, on the store's own
    clock. When the store does not answer, samples stay in this process and
    calls go on as without a store.

    Example::

        latency = LatencyTracker(window=200, min_samples=20)
        latency.record("flash", 0.42)
        latency.quantile("flash", 0.95)  # None until "flash" has 20 samples
    """

    def __init__(
        self,
        *,
        window: int = 200,
        min_samples: int = 20,
        store: Store | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Creates a tracker with no samples.

        Args:
            window: The most samples kept per key; older ones are dropped.
            min_samples: The fewest samples a key needs before
                :meth:`quantile` answers; at most ``window``.
            store: A shared store (:class:`~routed_llm.redis.RedisStore`) to
                share samples with every replica using its namespace; None
                to keep them in this process.
            clock: Monotonic seconds; ``RoutedLlm(latency=...)`` times each
                attempt on it.

        Raises:
            TypeError: If a number is not a whole number, ``store`` cannot
                share samples, or ``clock`` is not callable.
            ValueError: If ``window`` or ``min_samples`` is below 1, or
                ``min_samples`` is above ``window``.
        """
        self._window = _count("window", window)
        self._min_samples = _count("min_samples", min_samples)
        if self._min_samples > self._window:
            raise ValueError(
                f"LatencyTracker(min_samples={min_samples!r}) is above window={window!r}: a key never "
                "holds more than window samples, so no quantile would ever be answered. Lower "
                "min_samples or raise window."
            )
        if store is not None and not callable(getattr(store, "share_samples", None)):
            raise TypeError(
                "LatencyTracker(store=...) takes a store that can share samples, such as "
                f"routed_llm.redis.RedisStore; got {type(store).__name__}, which has no share_samples()."
            )
        if not callable(clock):
            raise TypeError(
                "LatencyTracker(clock=...) must be a function returning seconds, like time.monotonic; "
                f"got {type(clock).__name__}."
            )
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._samples: dict[str, deque[float]] = {}
        self._unshared: dict[str, deque[float]] = {}  # Recorded here, not yet sent to the store.
        self._asked: set[str] = set()  # Keys asked about, read from the store with the recorded ones.
        self._sharing: asyncio.Task[None] | None = None

    @property
    def window(self) -> int:
        """The most samples kept per key."""
        return self._window

    @property
    def min_samples(self) -> int:
        """The fewest samples a key needs before :meth:`quantile` answers."""
        return self._min_samples

    @property
    def store(self) -> Store | None:
        """The shared store of samples, or None when they live in this process only."""
        return self._store

    @property
    def clock(self) -> Callable[[], float]:
        """The clock attempts are timed on."""
        return self._clock

    def record(self, key: str, seconds: float) -> None:
        """Adds one time to first response of ``key``.

        ``RoutedLlm(latency=...)`` calls it for every attempt that answered;
        call it yourself to seed a tracker (from a previous run, say).

        Args:
            key: The key that answered.
            seconds: How long its first response took.

        Raises:
            TypeError: If ``key`` is not a non-empty string or ``seconds`` is
                not a number.
            ValueError: If ``seconds`` is negative or not finite, or the
                store cannot record ``key``.
        """
        self._check_key(key)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError(
                f"LatencyTracker.record(seconds=...) is a number of seconds; got {type(seconds).__name__}."
            )
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(
                f"LatencyTracker.record(seconds={seconds!r}) must be a finite number of seconds, 0 or more."
            )
        with self._lock:
            self._window_of(self._samples, key).append(float(seconds))
            if self._store is not None:
                self._window_of(self._unshared, key).append(float(seconds))
        if self._store is not None:
            self._share_soon()

    def quantile(self, key: str, q: float) -> float | None:
        """The ``q`` quantile of ``key``'s recent times to first response.

        Interpolated linearly between the two nearest samples (as
        ``numpy.quantile`` does by default): ``q=0`` is the fastest sample,
        ``q=1`` the slowest.

        Args:
            key: The key.
            q: The quantile, from 0 to 1 (0.95 for the p95).

        Returns:
            Seconds; None while ``key`` has fewer than ``min_samples`` samples.

        Raises:
            TypeError: If ``key`` is not a non-empty string or ``q`` is not
                a number.
            ValueError: If ``q`` is not between 0 and 1, or the store
                cannot record ``key``.
        """
        self._check_key(key)
        if isinstance(q, bool) or not isinstance(q, int | float):
            raise TypeError(f"LatencyTracker.quantile(q=...) is a number from 0 to 1; got {q!r}.")
        if not 0 <= q <= 1:
            raise ValueError(f"LatencyTracker.quantile(q={q!r}) must be from 0 to 1, e.g. 0.95 for the p95.")
        with self._lock:
            if self._store is not None:
                self._asked.add(key)
            samples = self._samples.get(key)
            if samples is None or len(samples) < self._min_samples:
                return None
            ordered = sorted(samples)
        position = q * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    async def refresh(self, keys: Iterable[str] = ()) -> None:
        """Shares this process's new samples and reads every replica's, now.

        Without a store, does nothing. With one, waits for the background
        trip in flight (if any), then in one trip sends the samples recorded
        here since and replaces the local copy of every key known here (and
        of ``keys``) with the shared samples. Call it at start-up to begin
        with what other replicas learned; when the store does not answer,
        the local samples are kept.

        Args:
            keys: Keys to read besides those recorded or asked about here.

        Raises:
            ValueError: If the store cannot record one of ``keys``.
        """
        if self._store is None:
            return
        keys = tuple(keys)
        for key in keys:
            self._check_key(key)
        with self._lock:
            self._asked.update(keys)
        sharing = self._sharing
        if sharing is not None and not sharing.done() and sharing.get_loop() is asyncio.get_running_loop():
            await asyncio.shield(sharing)
        await self._exchange()

    async def _timed(self, key: str, waiting: Awaitable[_R | None]) -> _R | None:
        """Awaits ``key``'s first response, recording how long it took if it is an answer.

        The router loop wraps each attempt's first-response wait in it; the
        clock starts when the wait does, after any rate-budget reservation.
        """
        started = self._clock()
        response = await waiting
        # An error response, or an answer that begins with nothing in it, is no sign of speed.
        if response is not None and not is_error_response(response) and shows_anything(response):
            self.record(key, max(self._clock() - started, 0.0))
        return response

    def _window_of(self, samples: dict[str, deque[float]], key: str) -> deque[float]:
        found = samples.get(key)
        if found is None:
            found = samples[key] = deque(maxlen=self._window)
        return found

    def _check_key(self, key: object) -> None:
        if not isinstance(key, str) or not key:
            raise TypeError(f"A LatencyTracker key is a non-empty string; got {key!r}.")
        if self._store is not None:
            self._store.check_key(key)

    def _share_soon(self) -> None:
        """Starts a background trip to the store, unless one is in flight (it sends these samples too)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # Outside an event loop: sent with the next sample recorded in one, or refresh().
        sharing = self._sharing
        if sharing is not None and not sharing.done() and sharing.get_loop() is loop:
            return
        self._sharing = loop.create_task(self._share_unshared())

    async def _share_unshared(self) -> None:
        try:
            while self._unshared:
                await self._exchange()
        except Exception:  # A Store never raises; should a custom one, no call may fail for it.
            logger.warning("Sharing latency samples failed; they are kept in this process.", exc_info=True)

    async def _exchange(self) -> None:
        """One trip: sends the unshared samples, replaces the local ones with the store's."""
        assert self._store is not None
        with self._lock:
            unshared, self._unshared = self._unshared, {}
            keys = sorted(self._samples.keys() | self._asked | unshared.keys())
        shared = await self._store.share_samples(
            {key: tuple(samples) for key, samples in unshared.items()}, keys, self._window
        )
        if shared is None:
            return  # The store did not answer: what was recorded here stays here.
        with self._lock:
            for key in keys:
                merged: deque[float] = deque(shared.get(key, ()), maxlen=self._window)
                merged.extend(self._unshared.get(key, ()))  # Recorded during the trip.
                if merged:
                    self._samples[key] = merged
                else:
                    self._samples.pop(key, None)


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"LatencyTracker({name}=...) is a whole number, like 20; got {value!r}.")
    if value < 1:
        raise ValueError(f"LatencyTracker({name}={value!r}) must be at least 1.")
    return value

"""Latency-aware routing: the key whose recent time to first response is lowest."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from routed_llm.errors import is_transient
from routed_llm.latency import LatencyTracker
from routed_llm.strategies.base import (
    Decision,
    RoutingContext,
    Strategy,
    TransientPolicy,
    _key_sequence,
    _next_in_order,
    _require_callable,
)


class FastestFirst(Strategy):
    """Picks the available key with the lowest recent time to first response.

    Keys are ranked by the ``quantile`` of their recent times to first
    response in ``latency`` (the median by default), fastest first. Keys
    with fewer than ``latency.min_samples`` samples have no quantile yet:
    they rank after the others, in the order given.

    * The first pick is the fastest key that :meth:`RoutingContext.is_available`
      allows; when none is, the one whose cooldown ends soonest.
    * On the first pick, with probability ``explore``, an available key
      with too few samples is tried instead (one at random, when several
      are), so that every key gathers samples. ``seed`` makes the draws
      repeatable. A key with enough samples is never explored: it is tried
      again when the keys faster than it fail.
    * After a transient failure, the next fastest key that has not failed;
      a failure ``is_transient`` rejects stops the call.

    Pass the same tracker to ``RoutedLlm(latency=...)`` so that it learns::

        latency = LatencyTracker()
        llm = RoutedLlm(
            models={"flash": ..., "pro": ..., "on_device": ...},
            router=FastestFirst(["flash", "pro", "on_device"], latency=latency),
            latency=latency,
        )

    Args:
        keys: The keys to choose from; ties and keys without a quantile go
            in this order.
        latency: The tracker whose quantiles rank the keys.
        quantile: Which quantile ranks them, from 0 to 1 (0.95 ranks by p95).
        explore: The probability, from 0 to 1, of trying a key with too few
            samples on a first pick.
        seed: Seeds the exploration draws; None for fresh randomness.
        is_transient: Which failures may fall back.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``keys`` is empty or names a key twice, or
            ``quantile`` or ``explore`` is not from 0 to 1.
    """

    def __init__(
        self,
        keys: Sequence[str],
        latency: LatencyTracker,
        *,
        quantile: float = 0.5,
        explore: float = 0.05,
        seed: int | None = None,
        is_transient: TransientPolicy = is_transient,
    ) -> None:
        self.keys = _key_sequence("FastestFirst(keys)", keys)
        if not isinstance(latency, LatencyTracker):
            raise TypeError(
                f"FastestFirst(latency=...) takes a LatencyTracker; got {type(latency).__name__}. Pass "
                "the tracker given to RoutedLlm(latency=...), so that the strategy sees what it records."
            )
        if latency.store is not None:
            for key in self.keys:
                latency.store.check_key(key)
        self.latency = latency
        self.quantile = _probability("quantile", quantile)
        self.explore = _probability("explore", explore)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"FastestFirst(seed=...) is a whole number or None; got {seed!r}.")
        self.seed = seed
        _require_callable("FastestFirst(is_transient=...)", is_transient)
        self.is_transient = is_transient
        self._random = random.Random(seed)

    def __repr__(self) -> str:
        return (
            f"FastestFirst({list(self.keys)!r}, quantile={self.quantile}, explore={self.explore}, "
            f"seed={self.seed!r})"
        )

    @property
    def declared_keys(self) -> frozenset[str]:
        """Every key of ``keys``."""
        return frozenset(self.keys)

    def decide(self, ctx: RoutingContext) -> Decision:
        """Returns the fastest key that may be tried now, or on a first pick sometimes one to explore."""
        ranked, unranked = self._ranked()
        if not ctx.is_failover and unranked and self._random.random() < self.explore:
            candidates = [key for key in unranked if ctx.is_available(key)]
            if candidates:
                return self._random.choice(candidates)
        return _next_in_order(ranked, ctx, self.is_transient)

    def _ranked(self) -> tuple[list[str], list[str]]:
        """Every key, fastest first and those without a quantile last; and those alone."""
        timed: list[tuple[float, int, str]] = []
        unranked: list[str] = []
        for index, key in enumerate(self.keys):
            seconds = self.latency.quantile(key, self.quantile)
            if seconds is None:
                unranked.append(key)
            else:
                timed.append((seconds, index, key))
        return [key for _, _, key in sorted(timed)] + unranked, unranked


def _probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"FastestFirst({name}=...) is a number from 0 to 1; got {value!r}.")
    if not (math.isfinite(value) and 0 <= value <= 1):
        raise ValueError(f"FastestFirst({name}={value!r}) must be from 0 to 1.")
    return float(value)

"""Experiments: traffic split by weight, sticky per user, and one key kept for a whole invocation."""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from routed_llm.routing import route_notes
from routed_llm.strategies.base import (
    Decision,
    RoutingContext,
    Strategy,
    _require_key,
    _require_strategy,
    decide,
)


@dataclass(frozen=True)
class ABTestStrategy(Strategy):
    """Splits traffic between keys by weight, sticky per user.

    Each unit (a user by default) is assigned an arm by a stable hash of the
    experiment name and the unit's id: the same user gets the same arm on
    every call, in every process and on every replica, with no shared state.
    Renaming the experiment reshuffles everyone; changing a weight moves only
    the users near the changed boundary. The arm and the experiment name are
    recorded in each response's ``custom_metadata["routed_llm"]`` (as
    ``arm`` and ``experiment``) and on the model call's span.

    The unit's id comes from the ADK invocation, so the runner needs a
    :class:`~routed_llm.RoutingPlugin`. Requests with no unit id (no plugin,
    or ``unit`` returned None) go to ``default_arm``.

    Decides the first pick only: wrap it in :class:`WithFallback` to fall
    back when an arm fails; the metadata then names the arm and the key that
    served.

    Args:
        experiment: The experiment's name; part of the hash.
        arms: Key to relative weight, e.g. ``{"flash": 90, "pro": 10}``.
        default_arm: The arm for requests with no unit id.
        unit: ``"user"``, ``"session"``, or a function of the
            :class:`RoutingContext` returning the unit's id (or None).
    """

    experiment: str
    arms: Mapping[str, float]
    default_arm: str = field(kw_only=True)
    unit: Literal["user", "session"] | Callable[[RoutingContext], str | None] = field(
        default="user", kw_only=True
    )
    _bounds: tuple[tuple[float, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.experiment, str) or not self.experiment:
            raise TypeError(f"ABTestStrategy(experiment) is a non-empty name; got {self.experiment!r}.")
        if not isinstance(self.arms, Mapping) or not self.arms:
            raise ValueError(
                "ABTestStrategy(arms) maps each key to its weight, e.g. {'flash': 90, 'pro': 10}."
            )
        for key, weight in self.arms.items():
            _require_key("ABTestStrategy(arms) key", key)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise TypeError(f"ABTestStrategy(arms)[{key!r}] is a finite number; got {weight!r}.")
            if weight < 0:
                raise ValueError(f"ABTestStrategy(arms)[{key!r}] is negative ({weight}); weights are >= 0.")
        total = float(sum(self.arms.values()))
        if total <= 0:
            raise ValueError(
                "ABTestStrategy(arms) weights add up to 0; give at least one arm a positive weight."
            )
        if self.default_arm not in self.arms:
            raise ValueError(
                f"ABTestStrategy(default_arm={self.default_arm!r}) is not one of the arms "
                f"{sorted(self.arms)}."
            )
        if self.unit not in ("user", "session") and not callable(self.unit):
            raise ValueError(
                f"ABTestStrategy(unit=...) is 'user', 'session' or a function; got {self.unit!r}."
            )
        bounds, running = [], 0.0
        for key in sorted(self.arms):  # Sorted, so the order the arms were written in does not matter.
            if self.arms[key] > 0:
                running += self.arms[key] / total
                bounds.append((running, key))
        object.__setattr__(self, "arms", MappingProxyType(dict(self.arms)))
        object.__setattr__(self, "_bounds", tuple(bounds))

    @property
    def declared_keys(self) -> frozenset[str]:
        """Every arm."""
        return frozenset(self.arms)

    def assign(self, unit_id: str) -> str:
        """The arm of ``unit_id``: the same for the same id, always and everywhere."""
        digest = hashlib.sha256(f"{self.experiment}\x00{unit_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        return next(
            (key for bound, key in self._bounds if point < bound and self.arms[key] > 0), self._bounds[-1][1]
        )

    def decide(self, ctx: RoutingContext) -> Decision:
        """Returns the unit's arm on the first pick, None after a failure."""
        if ctx.is_failover:
            return None
        unit_id = self._unit_id(ctx)
        arm = self.assign(unit_id) if unit_id else self.default_arm
        ctx.annotate(experiment=self.experiment, arm=arm)
        # An arm whose circuit is open is served by the fallback tail (WithFallback), still recorded.
        return arm if ctx.is_available(arm) else None

    def _unit_id(self, ctx: RoutingContext) -> str | None:
        if callable(self.unit):
            return self.unit(ctx)
        invocation = ctx.invocation
        if invocation is None:
            return None
        return invocation.user_id if self.unit == "user" else invocation.session_id


class StickyPerInvocation(Strategy):
    """Keeps one key for all the model calls of an invocation.

    An agent may call the model several times in one invocation (tool round
    trips). A switch mid-loop is safe for Gemini's thought signatures (each
    attempt's request is made valid for its model), but the loop continues on
    a model that did not plan it, and Gemini 3 gets the bypass value instead
    of its own signatures. This wrapper remembers the key its strategy chose
    at the invocation's first model call and picks it again for the rest of
    that invocation. If that key fails, the wrapped strategy falls back as
    usual and the new key is remembered instead. Annotations made with the
    first pick (an A/B arm, say) are recorded again with every later one.

    The wrapped strategy is still asked at every call, so that a privacy
    gate sees every request (a tool result may bring private data into a
    public conversation): when it confines the call
    (:meth:`~routed_llm.strategies.RoutingContext.confine`), its pick wins
    and is kept for the rest of the invocation.

    Needs the invocation id, from a :class:`~routed_llm.RoutingPlugin`;
    without it every call is decided afresh.

    Args:
        strategy: The strategy whose pick is kept.
        max_invocations: How many invocations to remember at once; the oldest
            is forgotten first. Invocations end without notice, so the memory
            is bounded rather than cleaned up.
    """

    def __init__(self, strategy: Strategy, *, max_invocations: int = 10_000) -> None:
        _require_strategy("StickyPerInvocation(strategy)", strategy)
        if isinstance(max_invocations, bool) or not isinstance(max_invocations, int) or max_invocations < 1:
            raise ValueError(
                f"StickyPerInvocation(max_invocations=...) is a whole number >= 1; got {max_invocations!r}."
            )
        self.strategy = strategy
        self.max_invocations = max_invocations
        self._chosen: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()

    def __repr__(self) -> str:
        return f"StickyPerInvocation({self.strategy!r}, max_invocations={self.max_invocations})"

    @property
    def declared_keys(self) -> frozenset[str]:
        """The wrapped strategy's keys."""
        return self.strategy.declared_keys

    async def decide(self, ctx: RoutingContext) -> Decision:
        """Returns the invocation's key if it has one, else the strategy's."""
        invocation = ctx.invocation
        if invocation is None:
            return await decide(self.strategy, ctx)
        remembered = self._chosen.get(invocation.invocation_id)
        choice = await decide(self.strategy, ctx)
        if (
            remembered is not None
            and ctx.confined_to is None  # A privacy gate that confines this call overrules the kept key.
            and not ctx.is_failover
            and remembered[0] in ctx.models
            and ctx.is_available(remembered[0])
        ):
            self._chosen.move_to_end(invocation.invocation_id)
            kept, notes = remembered
            ctx.annotate(**notes)
            return kept
        if choice is not None:
            self._chosen[invocation.invocation_id] = (choice, dict(route_notes()))
            self._chosen.move_to_end(invocation.invocation_id)
            while len(self._chosen) > self.max_invocations:
                self._chosen.popitem(last=False)
        return choice

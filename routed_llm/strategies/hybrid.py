"""The Genkit-style strategies for an on-device and a cloud model: fallback order, connectivity, input size.

The keys :data:`ON_DEVICE` and :data:`CLOUD`, the orders built from them, and
:func:`hybrid_model_on_device_cloud`, which builds a ``RoutedLlm`` with those keys.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest

from routed_llm.errors import is_transient
from routed_llm.routed import RoutedLlm
from routed_llm.routing import LlmRouter
from routed_llm.strategies.base import (
    Decision,
    RoutingContext,
    Strategy,
    TransientPolicy,
    _available_or,
    _key_sequence,
    _next_in_order,
    _require_callable,
    _require_key,
    _resolve,
)
from routed_llm.strategies.text import estimate_tokens, request_text

ON_DEVICE = "on_device"
"""The key of the on-device model in a hybrid."""

CLOUD = "cloud"
"""The key of the cloud model in a hybrid."""

PREFER_ON_DEVICE = (ON_DEVICE, CLOUD)
"""Fallback order: on-device first, then the cloud."""

PREFER_IN_CLOUD = (CLOUD, ON_DEVICE)
"""Fallback order: the cloud first, then on-device."""


@dataclass(frozen=True)
class FallbackStrategy(Strategy):
    """Tries keys in a fixed priority order.

    The first pick is ``order[0]``; after a transient failure, the next key
    of ``order`` that has not failed. A permanent failure stops the call.

    Args:
        order: The keys in priority order, e.g. :data:`PREFER_ON_DEVICE`.
        is_transient: Which failures may fall back.
    """

    order: Sequence[str]
    is_transient: TransientPolicy = field(default=is_transient, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "order", _key_sequence("FallbackStrategy(order)", self.order))
        _require_callable("FallbackStrategy(is_transient=...)", self.is_transient)

    @property
    def declared_keys(self) -> frozenset[str]:
        """Every key of ``order``."""
        return frozenset(self.order)

    def decide(self, ctx: RoutingContext) -> Decision:
        """Returns the first key of ``order`` that may be tried now."""
        return _next_in_order(self.order, ctx, self.is_transient)


@dataclass(frozen=True)
class ConnectivityStrategy(Strategy):
    """Picks by network availability: the cloud online, on-device offline.

    Args:
        is_online: Returns whether the network is up; sync or async.
        online: The key to pick when online.
        offline: The key to pick when offline.
    """

    is_online: Callable[[], bool | Awaitable[bool]] = field(kw_only=True)
    online: str = field(default=CLOUD, kw_only=True)
    offline: str = field(default=ON_DEVICE, kw_only=True)

    def __post_init__(self) -> None:
        _require_callable("ConnectivityStrategy(is_online=...)", self.is_online)
        _require_key("ConnectivityStrategy(online=...)", self.online)
        _require_key("ConnectivityStrategy(offline=...)", self.offline)

    @property
    def declared_keys(self) -> frozenset[str]:
        """The online and offline keys."""
        return frozenset({self.online, self.offline})

    async def decide(self, ctx: RoutingContext) -> Decision:
        """Returns ``online`` or ``offline`` on the first pick, None after."""
        if ctx.is_failover:
            return None
        online: bool = await _resolve(self.is_online())
        pick, other = (self.online, self.offline) if online else (self.offline, self.online)
        return _available_or(pick, other, ctx)


@dataclass(frozen=True)
class InputSizeStrategy(Strategy):
    """Sends small inputs to one key and large ones to another.

    Size is everything the model reads: the system instruction, every turn,
    function calls and responses (:func:`request_text`). Give exactly one
    limit: ``max_chars``, the length of that text, or ``max_tokens``, counted
    by ``count_tokens``. The default counter, :func:`estimate_tokens`, errs
    high; for the model's own count pass its counter, e.g.
    ``count_tokens=on_device.count_tokens`` for a
    :class:`~routed_llm.ondevice.LlamaCppLlm`.

    Args:
        max_chars: Inputs of at most this many characters are small.
        max_tokens: Inputs of at most this many tokens are small.
        small: The key for small inputs.
        large: The key for large inputs.
        count_tokens: Counts the tokens of a request, for ``max_tokens``.
        count_system_instruction: Whether the system instruction counts; with
            False only the turns do (the counter gets the request without
            its system instruction).
    """

    max_chars: int | None = field(default=None, kw_only=True)
    max_tokens: int | None = field(default=None, kw_only=True)
    small: str = field(default=ON_DEVICE, kw_only=True)
    large: str = field(default=CLOUD, kw_only=True)
    count_tokens: Callable[[LlmRequest], int] = field(default=estimate_tokens, kw_only=True)
    count_system_instruction: bool = field(default=True, kw_only=True)

    def __post_init__(self) -> None:
        if (self.max_chars is None) == (self.max_tokens is None):
            raise ValueError("InputSizeStrategy takes exactly one limit: max_chars=... or max_tokens=....")
        for name in ("max_chars", "max_tokens"):
            limit = getattr(self, name)
            if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
                raise ValueError(f"InputSizeStrategy({name}=...) is a whole number >= 0; got {limit!r}.")
        _require_key("InputSizeStrategy(small=...)", self.small)
        _require_key("InputSizeStrategy(large=...)", self.large)
        _require_callable("InputSizeStrategy(count_tokens=...)", self.count_tokens)

    @property
    def declared_keys(self) -> frozenset[str]:
        """The small and large keys."""
        return frozenset({self.small, self.large})

    def decide(self, ctx: RoutingContext) -> Decision:
        """Returns ``small`` or ``large`` on the first pick, None after."""
        if ctx.is_failover:
            return None
        # Routing agents there is no request yet: the user's message is the input.
        request = ctx.request or LlmRequest(contents=ctx.contents)
        if self.max_chars is not None:
            text = request_text(request, system_instruction=self.count_system_instruction)
            small = len(text) <= self.max_chars
        else:
            assert self.max_tokens is not None  # Checked at construction.
            if not self.count_system_instruction:
                request = _without_system_instruction(request)
            tokens = self.count_tokens(request)
            if isinstance(tokens, bool) or not isinstance(tokens, int):
                raise TypeError(
                    f"InputSizeStrategy(count_tokens=...) returned {tokens!r}; it takes the LlmRequest "
                    "and returns its number of tokens (an int)."
                )
            small = tokens <= self.max_tokens
        pick, other = (self.small, self.large) if small else (self.large, self.small)
        return _available_or(pick, other, ctx)


def _without_system_instruction(request: LlmRequest) -> LlmRequest:
    """A shallow copy of ``request`` with no system instruction, for a counter to read."""
    if request.config is None or request.config.system_instruction is None:
        return request
    config = request.config.model_copy(update={"system_instruction": None})
    return request.model_copy(update={"config": config})


def hybrid_model_on_device_cloud(
    *,
    on_device: BaseLlm | str,
    cloud: BaseLlm | str,
    strategy: LlmRouter,
    **routed_llm_options: Any,
) -> RoutedLlm:
    """Builds a ``RoutedLlm`` over an on-device and a cloud model.

    The models are keyed :data:`ON_DEVICE` and :data:`CLOUD`, the keys the
    strategies default to::

        smart = hybrid_model_on_device_cloud(
            on_device=on_device_model,
            cloud=Gemini(model="gemini-2.5-flash", retry_options=types.HttpRetryOptions(attempts=1)),
            strategy=FallbackStrategy(PREFER_ON_DEVICE),
        )

    Args:
        on_device: The on-device model.
        cloud: The cloud model.
        strategy: The router: a strategy, or any router function.
        **routed_llm_options: Passed on to ``RoutedLlm`` (``model=``, say).

    Returns:
        A ``RoutedLlm`` with exactly the keys ``on_device`` and ``cloud``.
    """
    return RoutedLlm(models={ON_DEVICE: on_device, CLOUD: cloud}, router=strategy, **routed_llm_options)

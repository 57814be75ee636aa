"""Ready-made routing strategies, each usable directly as a ``RoutedLlm`` router.

After Genkit's ``genkit_hybrid``: a strategy looks at a
:class:`RoutingContext` and names a key, or makes no decision (``None`` or
``""``). Strategies compose (:class:`FirstMatch`, :class:`WithFallback`) and
every one of them is also a router, so any strategy can be passed as
``RoutedLlm(router=...)`` with any keys::

    llm = RoutedLlm(
        models={"flash": "gemini-2.5-flash", "pro": "gemini-2.5-pro"},
        router=FallbackStrategy(["flash", "pro"]),
    )

For the on-device + cloud case the keys :data:`ON_DEVICE` and :data:`CLOUD`
and :func:`~routed_llm.hybrid_model_on_device_cloud` save the wiring.

Which strategies fall back: :class:`FallbackStrategy` and
:class:`WithFallback` choose again after a failure, and only when
:func:`~routed_llm.is_transient` says the failure may fall back. The others
decide the first pick only and make no decision after a failure, so on their
own they do not fall back: wrap them in :class:`WithFallback`.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import re
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, Literal

from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest

from routed_llm._text import instruction_text, message_texts
from routed_llm.errors import is_transient
from routed_llm.invocation import InvocationInfo, current_invocation
from routed_llm.routed import RoutedLlm
from routed_llm.routing import (
    ErrorContext,
    LlmRouter,
    annotate_route,
    is_available,
    route_notes,
    soonest_available,
)

__all__ = [
    "CLOUD",
    "ON_DEVICE",
    "PREFER_IN_CLOUD",
    "PREFER_ON_DEVICE",
    "TOKENS_PER_MESSAGE",
    "ABTestStrategy",
    "ConnectivityStrategy",
    "FallbackStrategy",
    "FirstMatch",
    "InputSizeStrategy",
    "PreRoutingStrategy",
    "RoutingContext",
    "StickyPerInvocation",
    "Strategy",
    "WithFallback",
    "estimate_tokens",
    "hybrid_model_on_device_cloud",
    "is_transient",
    "request_text",
]

ON_DEVICE = "on_device"
"""The key of the on-device model in a hybrid."""

CLOUD = "cloud"
"""The key of the cloud model in a hybrid."""

PREFER_ON_DEVICE = (ON_DEVICE, CLOUD)
"""Fallback order: on-device first, then the cloud."""

PREFER_IN_CLOUD = (CLOUD, ON_DEVICE)
"""Fallback order: the cloud first, then on-device."""

Decision = str | None
"""A key, or None (or ``""``) for no decision."""

TransientPolicy = Callable[[BaseException], bool]
"""Decides whether a failure may fall back; :func:`is_transient` by default."""


@dataclass(frozen=True)
class RoutingContext:
    """What a strategy decides on.

    Attributes:
        request: The request being routed. Read it; do not edit it.
        models: The routed models by key.
        error_context: None on the first pick, else what failed so far.
    """

    request: LlmRequest
    models: Mapping[str, BaseLlm]
    error_context: ErrorContext | None = None

    @property
    def is_failover(self) -> bool:
        """Whether a model already failed in this call."""
        return self.error_context is not None

    @property
    def failed_keys(self) -> frozenset[str]:
        """The keys that failed so far in this call (empty on the first pick)."""
        return self.error_context.failed_keys if self.error_context else frozenset()

    @cached_property
    def input_text(self) -> str:
        """The text of the request's contents, the turns the model will read.

        Text parts of every content (user and model turns alike) joined by
        newlines; thoughts, function calls and responses and media are not
        text and are left out. The system instruction is not included: see
        :attr:`system_instruction_text`.
        """
        return "\n".join(
            part.text
            for content in self.request.contents
            for part in content.parts or ()
            if part.text and not part.thought
        )

    @property
    def invocation(self) -> InvocationInfo | None:
        """Who is asking: user, session, invocation, agent, app and state.

        Set when the runner has a :class:`~routed_llm.RoutingPlugin` (or the
        agent uses :func:`~routed_llm.capture_invocation`); None otherwise.
        """
        return current_invocation()

    def is_available(self, key: str) -> bool:
        """Whether ``key`` may be tried now, by the routed model's :class:`~routed_llm.HealthTracker`.

        False while the key's circuit is open and while its half-open trial
        is in flight; always True without a tracker. Every built-in strategy
        skips unavailable keys, and when every candidate is unavailable
        tries the one whose cooldown ends soonest.
        """
        return is_available(key)

    def annotate(self, **values: str | int | float | bool) -> bool:
        """Records values with the route: see :func:`~routed_llm.annotate_route`."""
        return annotate_route(**values)

    @property
    def input_chars(self) -> int:
        """The length of :attr:`input_text` in characters."""
        return len(self.input_text)

    @cached_property
    def system_instruction_text(self) -> str:
        """The text of the request's system instruction ("" when it has none)."""
        return instruction_text(self.request.config.system_instruction if self.request.config else None)


class Strategy(ABC):
    """The interface of a routing strategy; subclass it to write your own.

    Implement :meth:`decide`. The base class makes the strategy a router, so
    it can be passed as ``RoutedLlm(router=...)`` and composed with the
    built-in strategies::

        class PremiumToPro(Strategy):
            def decide(self, ctx):
                return "pro" if "premium" in ctx.input_text else None
    """

    @abstractmethod
    def decide(self, ctx: RoutingContext) -> Decision | Awaitable[Decision]:
        """Names the key to try, or None (or ``""``) for no decision.

        Args:
            ctx: The request and what failed so far.

        Returns:
            A key, or None; either may be returned through an awaitable.
        """

    @property
    def declared_keys(self) -> frozenset[str]:
        """The keys this strategy may name, where known ahead of time.

        ``RoutedLlm`` checks them against its models at construction, so a
        misspelled key fails there instead of on the first request. Empty
        when the strategy cannot know (a user function decides).
        """
        return frozenset()

    async def __call__(
        self,
        models: Mapping[str, BaseLlm],
        llm_request: LlmRequest,
        error_context: ErrorContext | None,
    ) -> str | None:
        """Routes like any router: see :data:`~routed_llm.LlmRouter`."""
        return await decide(self, RoutingContext(llm_request, models, error_context))


async def decide(strategy: Strategy, ctx: RoutingContext) -> Decision:
    """Asks ``strategy`` for a decision, awaiting it and folding ``""`` to None.

    Args:
        strategy: The strategy to ask.
        ctx: What it decides on.

    Returns:
        A key, or None for no decision.

    Raises:
        TypeError: If the strategy returns something other than a string or
            None.
    """
    choice = await _resolve(strategy.decide(ctx))
    if choice is None or choice == "":
        return None
    if not isinstance(choice, str):
        raise TypeError(
            f"{type(strategy).__name__}.decide returned {choice!r} ({type(choice).__name__}); "
            "a strategy returns a key string, or None/'' for no decision."
        )
    return choice


@dataclass(frozen=True)
class PreRoutingStrategy(Strategy):
    """Decides the first pick with your own function: privacy, cost, tier.

    Args:
        fn: ``fn(ctx)``, sync or async, returns a key, or ``""``/None for no
            decision. Not consulted after a failure.
    """

    fn: Callable[[RoutingContext], Decision | Awaitable[Decision]]

    def __post_init__(self) -> None:
        _require_callable("PreRoutingStrategy(fn)", self.fn)

    async def decide(self, ctx: RoutingContext) -> Decision:
        """Returns ``fn(ctx)`` on the first pick, None after a failure."""
        if ctx.is_failover:
            return None
        choice: Decision = await _resolve(self.fn(ctx))
        return choice


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


def request_text(request: LlmRequest, *, system_instruction: bool = True, thoughts: bool = False) -> str:
    """Everything a model reads of ``request``, as one text.

    The system instruction (a string, a ``Part``, a ``Content`` or a list of
    them), then the parts of every turn: text as it is, function calls and
    function responses as the JSON a model is shown, code and code results as
    their text. Media have no text and are left out. The messages are joined
    by newlines. ``InputSizeStrategy(max_chars=...)`` measures this text, and
    :func:`estimate_tokens` estimates its tokens.

    Args:
        request: The request.
        system_instruction: Whether to include the system instruction.
        thoughts: Whether to include thought parts (a model does not read its
            own past thoughts; a privacy rule may want to).

    Returns:
        The text, "" for a request with none.
    """
    return "\n".join(message_texts(request, system_instruction=system_instruction, thoughts=thoughts))


TOKENS_PER_MESSAGE = 4
"""What :func:`estimate_tokens` adds for each message: a chat template's role markers."""


def estimate_tokens(source: LlmRequest | str) -> int:
    """Estimates, without a tokenizer, how many tokens a model reads; errs high.

    The default counter of :class:`InputSizeStrategy`. For a request it counts
    what :func:`request_text` reads (the system instruction, every turn,
    function calls and responses), plus :data:`TOKENS_PER_MESSAGE` for each
    message; for a string, that string alone.

    Costs are per script, measured against SmolLM2's tokenizer (49,152 byte
    pairs, trained mostly on English, so it splits other scripts finely; a
    larger multilingual tokenizer such as Gemini's needs fewer tokens, so the
    estimate stays on the safe side). ``benchmarks/token_estimate.py``
    measures it, and ``docs/strategies.md`` shows the table:

    * Latin-script words: at least one token each; 0.25 tokens a letter in
      text that reads as English (by its share of common English words), up
      to 0.45 in other languages, plus 0.5 for each accented letter;
    * digits, punctuation and symbols of ASCII: one token each; a line
      break: one; a run of several spaces: one;
    * Greek, Cyrillic, Armenian, Hebrew and Arabic letters: 1.1 each;
    * Chinese characters and kanji: 2.2 each; kana, CJK punctuation and
      full-width forms: 2.0 each;
    * emoji: 3 each; anything else: its UTF-8 length in bytes (a byte-level
      tokenizer's worst case), e.g. 3 for a Hangul syllable.

    Rare Chinese characters cost a byte-level tokenizer up to 3 tokens and
    are undercounted; pass a real counter (``LlamaCppLlm.count_tokens``, say)
    to :class:`InputSizeStrategy` where precision matters.

    Args:
        source: A request, or a text.

    Returns:
        The estimated number of tokens, each message's rounded up.
    """
    if isinstance(source, str):
        return math.ceil(_text_tokens(source))
    return sum(TOKENS_PER_MESSAGE + math.ceil(_text_tokens(text)) for text in message_texts(source))


# Common English words: their share tells English (0.2 tokens a letter for an
# English tokenizer) from other Latin-script languages (up to 0.45).
_ENGLISH_WORDS = frozenset(
    """the of and to a in is it that for on with as was at by be this are or from an not but have has had
    he she they we you i his her their its our your my me him them us there here what which who when where
    how why all any some no one two can could will would should may might must do does did been were if
    then than so also just about into over after before up out more most other such only very like these
    those because while""".split()  # noqa: SIM905 - a word list reads best as text.
)
_LATIN_WORD = re.compile(r"[A-Za-z\u00C0-\u024F]+")
_WHITESPACE = re.compile(r"\s+")


def _text_tokens(text: str) -> float:
    words = _LATIN_WORD.findall(text)
    english = sum(word.lower() in _ENGLISH_WORDS for word in words) / len(words) if words else 0.0
    per_letter = 0.45 - 0.2 * min(1.0, max(0.0, (english - 0.05) / 0.2))
    tokens = sum(
        max(1.0, per_letter * len(word)) + 0.5 * sum(not c.isascii() for c in word) for word in words
    )
    for run in _WHITESPACE.findall(text):
        tokens += run.count("\n") or int(len(run) > 1)
    return tokens + sum(_char_tokens(char) for char in _LATIN_WORD.sub("", text) if not char.isspace())


def _char_tokens(char: str) -> float:
    code = ord(char)
    if code < 0x80:
        return 1.0
    if 0x0370 <= code <= 0x07FF:  # Greek, Cyrillic, Armenian, Hebrew, Arabic...
        return 1.1
    if 0x3400 <= code <= 0x4DBF or 0x4E00 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF:
        return 2.2  # CJK ideographs.
    if 0x3000 <= code <= 0x30FF or 0xFF00 <= code <= 0xFFEF:
        return 2.0  # CJK punctuation, kana, full-width forms.
    if code == 0xFE0F:  # Emoji presentation selector.
        return 1.0
    if code == 0x200D:  # Zero-width joiner, inside emoji sequences.
        return 2.0
    if 0x1F000 <= code <= 0x1FAFF:  # Emoji.
        return 3.0
    return float(len(char.encode()))


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
        if self.max_chars is not None:
            text = request_text(ctx.request, system_instruction=self.count_system_instruction)
            small = len(text) <= self.max_chars
        else:
            assert self.max_tokens is not None  # Checked at construction.
            request = (
                ctx.request if self.count_system_instruction else _without_system_instruction(ctx.request)
            )
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


@dataclass(frozen=True)
class FirstMatch(Strategy):
    """A chain of rules: asks each strategy in turn, takes the first decision.

    Asked the same way on the first pick and after failures.

    Args:
        strategies: The strategies to ask, in order.
    """

    strategies: Sequence[Strategy]

    def __post_init__(self) -> None:
        strategies = tuple(self.strategies)
        if not strategies:
            raise ValueError("FirstMatch([...]) needs at least one strategy.")
        for index, strategy in enumerate(strategies):
            if not isinstance(strategy, Strategy):
                raise TypeError(
                    f"FirstMatch([...])[{index}] is a {type(strategy).__name__}, not a Strategy. "
                    "Wrap a function of the context in PreRoutingStrategy(fn)."
                )
        object.__setattr__(self, "strategies", strategies)

    @property
    def declared_keys(self) -> frozenset[str]:
        """Every key any of the strategies declares."""
        return frozenset().union(*(strategy.declared_keys for strategy in self.strategies))

    async def decide(self, ctx: RoutingContext) -> Decision:
        """Returns the first decision any strategy makes, else None."""
        for strategy in self.strategies:
            choice = await decide(strategy, ctx)
            if choice is not None:
                return choice
        return None


@dataclass(frozen=True)
class WithFallback(Strategy):
    """Any strategy's pick, plus a guaranteed fallback tail.

    The first pick is the strategy's, or the first key of ``fallback_order``
    when it makes none. After a transient failure, the next key of
    ``fallback_order`` that has not failed; the wrapped strategy is not asked
    again. Only keys in the tail are ever tried after the first pick: with
    ``fallback_order=[ON_DEVICE]``, a request a privacy rule kept on-device
    never reaches the cloud, even when the device fails.

    Args:
        strategy: The strategy that makes the first pick.
        fallback_order: The keys to fall back to, in order.
        is_transient: Which failures may fall back.
    """

    strategy: Strategy
    fallback_order: Sequence[str] = field(kw_only=True)
    is_transient: TransientPolicy = field(default=is_transient, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.strategy, Strategy):
            raise TypeError(f"WithFallback(strategy) takes a Strategy; got {type(self.strategy).__name__}.")
        object.__setattr__(
            self, "fallback_order", _key_sequence("WithFallback(fallback_order=...)", self.fallback_order)
        )
        _require_callable("WithFallback(is_transient=...)", self.is_transient)

    @property
    def declared_keys(self) -> frozenset[str]:
        """The strategy's keys and the tail's."""
        return self.strategy.declared_keys | frozenset(self.fallback_order)

    async def decide(self, ctx: RoutingContext) -> Decision:
        """Returns the strategy's pick first, then the tail's next key."""
        if not ctx.is_failover:
            return await decide(self.strategy, ctx) or _next_in_order(
                self.fallback_order, ctx, self.is_transient
            )
        return _next_in_order(self.fallback_order, ctx, self.is_transient)


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
    trips). Switching models mid-loop can break providers that need their own
    state sent back (Gemini thought signatures, function-call ids). This
    wrapper remembers the key its strategy chose at the invocation's first
    model call and picks it again for the rest of that invocation. If that
    key fails, the wrapped strategy falls back as usual and the new key is
    remembered instead. Annotations made with the first pick (an A/B arm,
    say) are recorded again with every later one.

    Needs the invocation id, from a :class:`~routed_llm.RoutingPlugin`;
    without it every call is decided afresh.

    Args:
        strategy: The strategy whose pick is kept.
        max_invocations: How many invocations to remember at once; the oldest
            is forgotten first. Invocations end without notice, so the memory
            is bounded rather than cleaned up.
    """

    def __init__(self, strategy: Strategy, *, max_invocations: int = 10_000) -> None:
        if not isinstance(strategy, Strategy):
            raise TypeError(f"StickyPerInvocation(strategy) takes a Strategy; got {type(strategy).__name__}.")
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
        if (
            remembered is not None
            and not ctx.is_failover
            and remembered[0] in ctx.models
            and ctx.is_available(remembered[0])
        ):
            self._chosen.move_to_end(invocation.invocation_id)
            kept, notes = remembered
            ctx.annotate(**notes)
            return kept
        choice = await decide(self.strategy, ctx)
        if choice is not None:
            self._chosen[invocation.invocation_id] = (choice, dict(route_notes()))
            self._chosen.move_to_end(invocation.invocation_id)
            while len(self._chosen) > self.max_invocations:
                self._chosen.popitem(last=False)
        return choice


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
            cloud=Gemini(model="gemini-2.5-flash"),
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


def _next_in_order(order: Sequence[str], ctx: RoutingContext, may_fall_back: TransientPolicy) -> Decision:
    """The first key of ``order`` not yet failed, if the last failure allows."""
    if ctx.error_context is not None and not may_fall_back(ctx.error_context.last_error):
        return None
    failed = ctx.failed_keys
    candidates = [key for key in order if key not in failed]
    return next((key for key in candidates if ctx.is_available(key)), None) or soonest_available(candidates)


def _available_or(pick: str, other: str, ctx: RoutingContext) -> str:
    """``pick``, unless its health says no and ``other``'s says yes."""
    return other if not ctx.is_available(pick) and ctx.is_available(other) else pick


async def _resolve(value: Any) -> Any:
    """Awaits ``value`` if it is awaitable."""
    if inspect.isawaitable(value):
        return await value
    return value


def _require_callable(what: str, value: object) -> None:
    if not callable(value):
        raise TypeError(f"{what} must be callable; got {type(value).__name__}.")


def _require_key(what: str, key: object) -> None:
    if not isinstance(key, str) or not key:
        raise TypeError(f"{what} is a non-empty key string; got {key!r}.")


def _key_sequence(what: str, keys: object) -> tuple[str, ...]:
    """Checks a non-empty sequence of distinct key strings; returns it as a tuple."""
    if isinstance(keys, str) or not isinstance(keys, Sequence):
        raise TypeError(f"{what} is a list of keys, e.g. ['primary', 'fallback']; got {keys!r}.")
    for key in keys:
        _require_key(what, key)
    if not keys:
        raise ValueError(f"{what} is empty; name at least one key.")
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(
            f"{what} names {duplicates} more than once; each key is tried at most once per call."
        )
    return tuple(keys)

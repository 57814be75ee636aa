"""Exception types and the error policy: which model failures may fall back.

:func:`classify_error` puts a failure in one of three classes: *transient*
(an outage, a timeout, a rate limit, an on-device runtime running out of
memory), *provider* (this key or provider cannot serve anyone: a bad key, a
disabled project, a retired model) or *request* (the request itself is at
fault). The default policy, :func:`is_transient`, falls back on transient
failures only, as Genkit's does; :func:`fall_back_across_providers` also falls
back on provider failures, for setups whose keys are different providers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal, TypeAlias

from google.adk.models.llm_response import LlmResponse
from google.genai import types

__all__ = [
    "AttemptTimeout",
    "BudgetExhausted",
    "CircuitOpen",
    "DeadlineExceeded",
    "ErrorClass",
    "HedgeDelay",
    "NoResponse",
    "PermanentModelError",
    "ResponseRejected",
    "RoutingError",
    "StreamStalled",
    "TransientModelError",
    "classify_error",
    "fall_back_across_providers",
    "is_error_response",
    "is_transient",
]

TRANSIENT_HTTP_CODES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP codes that say the service could not serve the request right now."""

PERMANENT_HTTP_CODES = frozenset({400, 401, 403, 404, 412})
"""HTTP codes that say the request itself or its credentials are wrong (provider or request)."""

TRANSIENT_STATUSES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL"})
"""Google API status names that say the service could not serve the request."""

PERMANENT_STATUSES = frozenset(
    {"INVALID_ARGUMENT", "PERMISSION_DENIED", "UNAUTHENTICATED", "FAILED_PRECONDITION", "NOT_FOUND"}
)
"""Google API status names that say the request would fail on every model."""


REFUSAL_CODES = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"})
"""Error codes of an error response that refuse the request itself: permanent."""

_BLOCK_REASONS = frozenset(reason.value for reason in types.BlockedReason)


def _rebuild_deadline(deadline: float, key: str | None) -> DeadlineExceeded:
    return DeadlineExceeded(deadline, key=key)


ErrorClass: TypeAlias = Literal["transient", "provider", "request"]
"""The three classes of model failure; see :func:`classify_error`."""

PROVIDER_HTTP_CODES = frozenset({401, 403, 404, 412})
"""HTTP codes that say this key or provider cannot serve anyone right now."""

PROVIDER_STATUSES = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "FAILED_PRECONDITION", "NOT_FOUND"})
"""Google API status names that say this key or provider cannot serve anyone."""

PROVIDER_REASONS = frozenset(
    {"API_KEY_INVALID", "API_KEY_EXPIRED", "SERVICE_DISABLED", "ACCESS_TOKEN_EXPIRED", "BILLING_DISABLED"}
)
"""``google.rpc.ErrorInfo`` reasons that blame the key or project, whatever the HTTP code."""

# What a provider says in the message when the key, project or region is at
# fault, even where the code alone (400) would blame the request.
_PROVIDER_MESSAGE = re.compile(
    r"api[ _]key (?:not valid|invalid|expired)|api_key_invalid|location is not supported"
    r"|billing (?:is )?(?:not enabled|disabled)|has not been used in project|service_disabled",
    re.IGNORECASE,
)
# Gemini's context-window overflow: 400 INVALID_ARGUMENT "The input token
# count (N) exceeds the maximum number of tokens allowed (M)"; on Vertex AI
# "... the input token count is N but model only supports up to M".
_OVERFLOW_MESSAGE = re.compile(
    r"input token count.{0,40}exceeds the maximum|exceeds the maximum number of tokens"
    r"|input token count is \d+ but model only supports up to"
    r"|context (?:length|window) exceeded|maximum context length",
    re.IGNORECASE | re.DOTALL,
)


class RoutingError(Exception):
    """The router made a choice that cannot be served.

    Raised when the router picks no model for a fresh request, or picks a key
    that is not one of the routed models. When it happens during failover, the
    model error that started the failover is chained as ``__cause__``.

    Attributes:
        key: The key the router returned, or None if it returned none.
        available: The keys the router could have chosen from.
    """

    def __init__(self, message: str, *, key: str | None, available: Sequence[str]) -> None:
        """Creates the error.

        Args:
            message: What went wrong and how to fix it.
            key: The key the router returned, or None if it returned none.
            available: The keys the router could have chosen from.
        """
        super().__init__(message)
        self.key = key
        self.available = tuple(available)


class TransientModelError(Exception):
    """Raised by a model to say another model may well succeed.

    Custom models raise it (usually ``from`` the underlying error) to state
    the class of a failure explicitly; :func:`is_transient` trusts it over
    anything else it could read off the error.
    """


class PermanentModelError(Exception):
    """Raised by a model to say the request would fail on every model.

    :func:`is_transient` trusts it over anything else it could read off the
    error, so strategies propagate it without trying another model.
    """


class AttemptTimeout(TransientModelError, TimeoutError):
    """A model gave no first response within ``first_response_timeout``.

    The attempt was cancelled and its stream closed. It goes to the router as
    ``last_error`` like any failure; being a :class:`TransientModelError`,
    every strategy fails over on it.

    Attributes:
        key: The key whose model timed out.
        timeout: The limit that expired, in seconds.
    """

    def __init__(self, key: str, timeout: float) -> None:
        """Creates the error.

        Args:
            key: The key whose model timed out.
            timeout: The limit that expired, in seconds.
        """
        super().__init__(f"Model key {key!r} gave no first response within {timeout:g} s.")
        self.key = key
        self.timeout = timeout

    def __reduce__(self) -> tuple[type[AttemptTimeout], tuple[str, float]]:
        return type(self), (self.key, self.timeout)


class HedgeDelay(TransientModelError):
    """A model has given no first response ``waited`` seconds into its attempt: time to hedge.

    ``RoutedLlm(hedge_after=...)`` hands it to the router as
    ``ErrorContext.last_error`` when an attempt is slow, with the slow key in
    ``failed_keys`` and ``errors``. It reports a slow attempt, not a failed
    one: the attempt it names is not cancelled, and it counts against no
    key's health. Being a :class:`TransientModelError`, every strategy picks
    its next key on it as on any transient failure; a router that returns
    None declines the hedge. It is never raised to the caller.

    Attributes:
        key: The key whose attempt is slow.
        waited: Seconds the attempt had waited for its first response.
    """

    def __init__(self, key: str, waited: float) -> None:
        """Creates the error.

        Args:
            key: The key whose attempt is slow.
            waited: Seconds the attempt had waited for its first response.
        """
        super().__init__(f"Model key {key!r} gave no first response in {waited:g} s; it may be hedged.")
        self.key = key
        self.waited = waited

    def __reduce__(self) -> tuple[type[HedgeDelay], tuple[str, float]]:
        return type(self), (self.key, self.waited)


class BudgetExhausted(TransientModelError):
    """A key's rate budget (:class:`~routed_llm.RateLimits`) for this minute is spent.

    Raised before the attempt, instead of calling the model, when the atomic
    reservation of one request finds the budget spent (usually because
    another replica got there first). It goes to the router as ``last_error``
    like any pre-output failure; being a :class:`TransientModelError`, every
    strategy fails over on it. It is no verdict on the key's health: the
    provider did not fail, our own budget did.

    Attributes:
        key: The key whose budget is spent.
        resets_in: Seconds until the budget's window moves on.
    """

    def __init__(self, key: str, resets_in: float) -> None:
        """Creates the error.

        Args:
            key: The key whose budget is spent.
            resets_in: Seconds until the budget's window moves on.
        """
        super().__init__(f"Model key {key!r} spent its rate budget; the next one starts in {resets_in:g} s.")
        self.key = key
        self.resets_in = resets_in

    def __reduce__(self) -> tuple[type[BudgetExhausted], tuple[str, float]]:
        return type(self), (self.key, self.resets_in)


class CircuitOpen(TransientModelError):
    """The router picked a key whose circuit is open, or whose half-open trial is taken.

    Raised before the attempt, instead of calling the model, when another
    routed key is available: the router is asked again with this as
    ``last_error``, and being a :class:`TransientModelError`, every strategy
    fails over on it. It is no verdict on the key's health. When no routed
    key is available at all, the pick goes ahead instead.

    Attributes:
        key: The key that was not tried.
        retry_at: When the key may next be tried, on the
            :class:`~routed_llm.HealthTracker`'s clock (its
            :meth:`~routed_llm.HealthTracker.available_at`).
    """

    def __init__(self, key: str, retry_at: float) -> None:
        """Creates the error.

        Args:
            key: The key that was not tried.
            retry_at: When it may next be tried, on the health tracker's clock.
        """
        super().__init__(
            f"Model key {key!r} was not tried: its circuit is open or its half-open trial is in flight."
        )
        self.key = key
        self.retry_at = retry_at

    def __reduce__(self) -> tuple[type[CircuitOpen], tuple[str, float]]:
        return type(self), (self.key, self.retry_at)


class NoResponse(TransientModelError):
    """A model ended its answer without a single response.

    ADK's ``Gemini`` does this when a stream closes before its first chunk.
    Nothing was output, so it is a failure before output: it goes to the
    router as ``last_error``, and being a :class:`TransientModelError`, every
    strategy fails over on it. It counts against the key's health.

    Attributes:
        key: The key whose model answered nothing.
    """

    def __init__(self, key: str) -> None:
        """Creates the error.

        Args:
            key: The key whose model answered nothing.
        """
        super().__init__(f"Model key {key!r} ended its answer without a single response.")
        self.key = key

    def __reduce__(self) -> tuple[type[NoResponse], tuple[str]]:
        return type(self), (self.key,)


class StreamStalled(TimeoutError):
    """A model that had begun answering went silent for ``idle_timeout``.

    Raised to the caller, with the model's stream closed. There is no
    failover: part of the answer was already given.

    Attributes:
        key: The key whose model stalled.
        timeout: The idle limit that expired, in seconds.
    """

    def __init__(self, key: str, timeout: float) -> None:
        """Creates the error.

        Args:
            key: The key whose model stalled.
            timeout: The idle limit that expired, in seconds.
        """
        super().__init__(f"Model key {key!r} sent nothing for {timeout:g} s after it began answering.")
        self.key = key
        self.timeout = timeout

    def __reduce__(self) -> tuple[type[StreamStalled], tuple[str, float]]:
        return type(self), (self.key, self.timeout)


class DeadlineExceeded(TimeoutError):
    """The call's ``deadline`` ran out before any output.

    Chained (``__cause__``) to the last model error, if a model failed
    before the budget ran out. The router is not asked again.

    Attributes:
        deadline: The call's whole budget, in seconds.
        key: The key whose attempt was running when the budget ran out (its
            first response awaited, or its answer held or judged), or None
            if it ran out between attempts.
    """

    def __init__(self, deadline: float, *, key: str | None) -> None:
        """Creates the error.

        Args:
            deadline: The call's whole budget, in seconds.
            key: The key being tried when it ran out, if any.
        """
        where = f" while model key {key!r} was being tried" if key is not None else ""
        super().__init__(f"The call's deadline of {deadline:g} s ran out{where}, before any output.")
        self.deadline = deadline
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_deadline, (self.deadline, self.key)


class ResponseRejected(Exception):
    """A model answered, but its answer was rejected before any of it was output.

    Two things reject an answer: the answer is an *error response* (its first
    response has ``error_code`` set and no content parts, as ADK makes of
    Gemini's HTTP 200 with ``finishReason: OTHER`` or a blocked prompt), or
    the key's judge (``RoutedLlm(accept=...)``) said no. Either way nothing
    was output, so it goes to the router as ``last_error`` like any failure.
    :func:`classify_error` reads the response: a refusal (:data:`REFUSAL_CODES`
    or a blocked prompt) is ``"request"``, anything else ``"transient"``.

    If no other model serves, the rejected output itself is yielded, marked
    ``rejected`` in its route record, rather than this exception raised.

    Attributes:
        key: The key whose answer was rejected.
        response: The rejected response: the error response, or the final
            response the judge saw.
        reason: Why it was rejected.
    """

    def __init__(self, key: str, response: LlmResponse, reason: str) -> None:
        """Creates the error.

        Args:
            key: The key whose answer was rejected.
            response: The rejected response.
            reason: Why it was rejected.
        """
        super().__init__(f"The answer of model key {key!r} was rejected: {reason}")
        self.key = key
        self.response = response
        self.reason = reason

    def __reduce__(self) -> tuple[type[ResponseRejected], tuple[str, LlmResponse, str]]:
        return type(self), (self.key, self.response, self.reason)


def is_error_response(response: LlmResponse) -> bool:
    """Whether ``response`` is an error response: ``error_code`` set and no content parts.

    Args:
        response: A response a model yielded.

    Returns:
        True if it carries an error code and nothing to show.
    """
    return response.error_code is not None and not (response.content and response.content.parts)


def _refuses(response: LlmResponse) -> bool:
    """Whether an error response refuses the request: a safety-type code or a blocked prompt."""
    if not is_error_response(response):
        return False
    code = str(getattr(response.error_code, "value", response.error_code))
    # A blocked prompt has no candidate, so no finish reason; Gemini's block reasons include OTHER.
    return code in REFUSAL_CODES or (response.finish_reason is None and code in _BLOCK_REASONS)


def classify_error(error: BaseException) -> ErrorClass:
    """Says who is at fault for a model failure, and so where it may go next.

    * ``"transient"``: the service could not serve this request right now
      (an outage, a timeout, a rate limit, an input too long for this
      model's window). Another model, or this one later, may succeed.
    * ``"provider"``: this key or provider cannot serve anyone right now: an
      invalid or expired API key, a disabled API or project, an unsupported
      region, a retired model. Another provider (or the on-device model)
      would answer; the same provider under the same key would not.
    * ``"request"``: the request itself is at fault (malformed, or refused).
      It would fail the same way on every model.

    The error and then each of its explicit causes (``raise ... from``) are
    read in turn; the first that says anything decides. An exception group
    (``asyncio.TaskGroup`` raises one) takes the worst class of its leaves:
    ``"request"`` over ``"provider"`` over ``"transient"``. See
    ``docs/error-policy.md`` for every shape each SDK raises.

    Args:
        error: The exception a model raised.

    Returns:
        The error's class.
    """
    try:
        return _classify(error, set())
    except Exception:  # A policy must never raise (a RecursionError on absurd nesting, say).
        return "transient"


def is_transient(error: BaseException) -> bool:
    """The default error policy: whether a failure may fall back to another model.

    Exactly ``classify_error(error) == "transient"``: Genkit's policy, under
    which a provider-scoped failure (a bad key, say) is permanent, since it
    "would fail the same way on every branch" when every branch is the same
    provider. For hybrids and multi-provider setups, pass
    :func:`fall_back_across_providers` instead.

    * :class:`PermanentModelError` is permanent, :class:`TransientModelError`
      transient.
    * :class:`ResponseRejected` is permanent when the rejected response is a
      refusal (an error code in :data:`REFUSAL_CODES`, or a blocked prompt),
      transient otherwise: a judge's rejection, ``MALFORMED_FUNCTION_CALL``,
      ``OTHER``, ``RECITATION``, an empty answer.
    * An input too long for the model's context window is transient,
      although it is sent as HTTP 400: a model with a larger window may well
      succeed. Recognised as LiteLLM's ``ContextWindowExceededError`` and by
      Gemini's message ("The input token count (N) exceeds the maximum
      number of tokens allowed (M)").
    * A Google API status name (``APIError.status`` in google-genai):
      ``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, ``RESOURCE_EXHAUSTED`` and
      ``INTERNAL`` are transient; ``INVALID_ARGUMENT``, ``PERMISSION_DENIED``,
      ``UNAUTHENTICATED``, ``FAILED_PRECONDITION`` and ``NOT_FOUND`` permanent.
    * An HTTP status code, read from ``code`` (google-genai), ``status_code``
      (LiteLLM, OpenAI, Anthropic), ``status`` (aiohttp) or
      ``response.status_code`` (httpx): 408, 429, 500, 502, 503 and 504 are
      transient; 400, 401, 403, 404 and 412 permanent.
    * An exception group is transient only if every leaf in it is.

    Anything else counts as transient: network and transport errors,
    timeouts, ``MemoryError``, and whatever an on-device runtime raises of its
    own (a ``RuntimeError`` from llama.cpp, say). Another model may well
    succeed where this one broke, and only the permanent classes above are
    known to fail the same way everywhere.

    Args:
        error: The exception a model raised.

    Returns:
        True if another model may be tried, False if the error should reach
        the caller at once.
    """
    return classify_error(error) == "transient"


def fall_back_across_providers(error: BaseException) -> bool:
    """An error policy that falls back on transient and provider failures.

    Pass it as any strategy's ``is_transient=`` when the keys are different
    providers, or a cloud model and an on-device one: a stale cloud key then
    lands on the device instead of failing the call::

        FallbackStrategy(PREFER_IN_CLOUD, is_transient=fall_back_across_providers)

    Only a failure of the request itself (``classify_error`` says
    ``"request"``) reaches the caller at once.

    Args:
        error: The exception a model raised.

    Returns:
        True unless the request itself is at fault.
    """
    return classify_error(error) != "request"


_RANK: dict[ErrorClass, int] = {"transient": 0, "provider": 1, "request": 2}


def _classify(error: BaseException, seen: set[int]) -> ErrorClass:
    """Classifies ``error``; ``seen`` is shared across group leaves, so cycles through groups end."""
    for link in _cause_chain(error, seen):
        if isinstance(link, BaseExceptionGroup):
            return _worst(_classify(leaf, seen) for leaf in link.exceptions)
        verdict = _classify_link(link)
        if verdict is not None:
            return verdict
    return "transient"


def _worst(classes: Iterable[ErrorClass]) -> ErrorClass:
    return max(classes, key=_RANK.__getitem__, default="transient")


def _classify_link(error: BaseException) -> ErrorClass | None:
    """Classifies one link of a cause chain; None when it says nothing."""
    if isinstance(error, PermanentModelError):
        return "request"
    if isinstance(error, TransientModelError):
        return "transient"
    if isinstance(error, ResponseRejected):
        return "request" if _refuses(error.response) else "transient"
    if any(cls.__name__ == "ContextWindowExceededError" for cls in type(error).__mro__):
        return "transient"
    base = _status_class(error)
    if base is None or base == "transient":
        return base
    # A 4xx: read what the provider said, which can blame the key or the
    # region, or the input's length, where the code alone blames the request.
    text = _error_text(error)
    if _OVERFLOW_MESSAGE.search(text):
        return "transient"
    if _PROVIDER_MESSAGE.search(text) or not PROVIDER_REASONS.isdisjoint(_reasons(error)):
        return "provider"
    return base


def _status_class(error: BaseException) -> ErrorClass | None:
    """Classifies the status name or HTTP code ``error`` carries.

    A status name this policy knows outranks the HTTP code.

    Returns:
        The class, or None when the error carries neither or one this policy
        does not name.
    """
    status = getattr(error, "status", None)
    name = getattr(status, "name", status)  # gRPC and enum statuses carry a name.
    if isinstance(name, str):
        name = name.upper()
        if name in TRANSIENT_STATUSES:
            return "transient"
        if name in PROVIDER_STATUSES:
            return "provider"
        if name in PERMANENT_STATUSES:
            return "request"
    code = _http_code(error)
    if code in TRANSIENT_HTTP_CODES:
        return "transient"
    if code in PROVIDER_HTTP_CODES:
        return "provider"
    if code in PERMANENT_HTTP_CODES:
        return "request"
    return None


def _error_text(error: BaseException) -> str:
    """The error's message and any message field it carries, for pattern checks."""
    try:
        message = getattr(error, "message", None)
        text = str(error)
    except Exception:  # Some SDKs' __str__ or properties read fields that may be unset.
        message, text = None, ""
    return f"{message}\n{text}" if isinstance(message, str) and message not in text else text


def _reasons(error: BaseException) -> set[str]:
    """The ``google.rpc.ErrorInfo`` reasons in a google-genai error's details."""
    details = getattr(error, "details", None)
    if isinstance(details, dict):
        body = details.get("error", details)
        details = body.get("details") if isinstance(body, dict) else None
    if not isinstance(details, list):
        return set()
    return {
        item["reason"] for item in details if isinstance(item, dict) and isinstance(item.get("reason"), str)
    }


def _cause_chain(error: BaseException, seen: set[int]) -> Iterator[BaseException]:
    """Yields ``error`` and its explicit causes not in ``seen``, stopping at a cycle."""
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__


def _http_code(error: BaseException) -> int | None:
    """The HTTP status code ``error`` carries, in any of the common shapes."""
    for holder, name in (
        (error, "status_code"),  # LiteLLM, OpenAI, Anthropic.
        (error, "status"),  # aiohttp (google-genai's is a name, skipped here).
        (error, "code"),  # google-genai, urllib; read after aiohttp's status, as it deprecates code.
        (getattr(error, "response", None), "status_code"),  # httpx.HTTPStatusError.
    ):
        candidate = getattr(holder, name, None)
        if isinstance(candidate, int) and not isinstance(candidate, bool):
            return candidate
    return None

"""Exception types and the error policy: which model failures may fall back.

A failure is *permanent* when it would fail the same way on every model (a
malformed request, a bad key, a model that does not exist) and *transient*
otherwise (an outage, a timeout, a rate limit, an on-device runtime running
out of memory). Strategies fall back on transient failures only, so a
permanent one reaches the caller at once instead of being sent to every model
in turn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

__all__ = [
    "PermanentModelError",
    "RoutingError",
    "TransientModelError",
    "is_transient",
]

TRANSIENT_HTTP_CODES = frozenset({408, 429, 500, 502, 503, 504})
"""HTTP codes that say the service could not serve the request right now."""

PERMANENT_HTTP_CODES = frozenset({400, 401, 403, 404, 412})
"""HTTP codes that say the request itself or its credentials are wrong."""

TRANSIENT_STATUSES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "INTERNAL"})
"""Google API status names that say the service could not serve the request."""

PERMANENT_STATUSES = frozenset(
    {"INVALID_ARGUMENT", "PERMISSION_DENIED", "UNAUTHENTICATED", "FAILED_PRECONDITION", "NOT_FOUND"}
)
"""Google API status names that say the request would fail on every model."""


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


def is_transient(error: BaseException) -> bool:
    """Decides whether a model failure may fall back to another model.

    The error and then each of its explicit causes (``raise ... from``) are
    read in turn; the first that says anything decides:

    * :class:`PermanentModelError` is permanent, :class:`TransientModelError`
      transient.
    * An input too long for the model's context window
      (``ContextWindowExceededError``, as LiteLLM raises it) is transient
      although it is sent as HTTP 400: a model with a larger window may
      well succeed.
    * A Google API status name (``APIError.status`` in google-genai):
      ``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, ``RESOURCE_EXHAUSTED`` and
      ``INTERNAL`` are transient; ``INVALID_ARGUMENT``, ``PERMISSION_DENIED``,
      ``UNAUTHENTICATED``, ``FAILED_PRECONDITION`` and ``NOT_FOUND`` permanent.
    * An HTTP status code, read from ``code`` (google-genai), ``status_code``
      (LiteLLM, OpenAI, Anthropic), ``status`` (aiohttp) or
      ``response.status_code`` (httpx): 408, 429, 500, 502, 503 and 504 are
      transient; 400, 401, 403, 404 and 412 permanent.

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
    for link in _cause_chain(error):
        if isinstance(link, PermanentModelError):
            return False
        if isinstance(link, TransientModelError) or _overflows_context(link):
            return True
        verdict = _status_verdict(link)
        if verdict is not None:
            return verdict
    return True


def _overflows_context(error: BaseException) -> bool:
    """Whether ``error`` is a context-window overflow, by its class name."""
    return any(cls.__name__ == "ContextWindowExceededError" for cls in type(error).__mro__)


def _cause_chain(error: BaseException) -> Iterator[BaseException]:
    """Yields ``error`` and its explicit causes, stopping at a cycle."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__


def _status_verdict(error: BaseException) -> bool | None:
    """Reads a status name or HTTP code off ``error`` and classifies it.

    Returns:
        True for a transient status, False for a permanent one, None when the
        error carries neither or one this policy does not name.
    """
    status = getattr(error, "status", None)
    name = getattr(status, "name", status)  # gRPC and enum statuses carry a name.
    if isinstance(name, str):
        if name.upper() in TRANSIENT_STATUSES:
            return True
        if name.upper() in PERMANENT_STATUSES:
            return False
    code = _http_code(error)
    if code in TRANSIENT_HTTP_CODES:
        return True
    if code in PERMANENT_HTTP_CODES:
        return False
    return None


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

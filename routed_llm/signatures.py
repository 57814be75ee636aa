"""Thought signatures made valid for the model each attempt goes to.

Gemini 3 models put an opaque ``thought_signature`` on the parts they
produce, and check the ones sent back: within the current turn (everything
after the last user message that is not a function response) each model
step's first function call must carry one, and a signature another model
issued is refused. When a routed call moves to another key in the middle of a
conversation, the request is rewritten for that key, for that attempt only
(it is rolled back with the rest of the request before the router is asked
again):

* a signature the same key issued is sent unchanged;
* going to a Gemini model, the first function call of each model step of
  the current turn gets :data:`BYPASS_SIGNATURE` if its signature is missing
  or another routed key issued it;
* every other signature another routed key issued is dropped, and with it
  a part that was sent only for that signature (a thought, or a part with
  nothing else in it), as ADK would not have sent it unsigned;
* a signature of unknown issuer is sent unchanged.

Who issued a signature is read from the route records of the session's
events when :class:`~routed_llm.RoutingPlugin` (or
:func:`~routed_llm.capture_invocation`) captured them for this model call,
and from the responses this process's :class:`~routed_llm.RoutedLlm` stamped.
A record naming a routed key with another model than the key's own (one
since replaced) names another issuer.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any

from google.adk.events.event import Event
from google.adk.models.base_llm import BaseLlm
from google.adk.models.google_llm import Gemini
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.utils.model_name_utils import is_gemini_model
from google.genai import types

__all__ = ["BYPASS_SIGNATURE", "SignatureLedger", "is_gemini", "remember_session_events"]

BYPASS_SIGNATURE = base64.urlsafe_b64decode("skip_thought_signature_validator")
"""The signature Google documents for function calls a Gemini 3 model did not make.

The bytes whose base64 form, as the client sends it, is the literal text
``skip_thought_signature_validator``.
"""

_METADATA_KEY = "routed_llm"  # routing.METADATA_KEY; routing imports this module.
_MAX_REMEMBERED = 10_000
_NOT_DATA = frozenset({"thought", "thought_signature", "part_metadata", "video_metadata", "media_resolution"})
_session_events: ContextVar[Sequence[Event] | None] = ContextVar("routed_llm_session_events", default=None)


def remember_session_events(events: Sequence[Event] | None) -> None:
    """Records the session's events for the model call about to be routed in this task.

    Called by :func:`~routed_llm.capture_invocation`; the list is read, never
    changed, when a request's signatures are checked.
    """
    _session_events.set(events)


def is_gemini(model: BaseLlm) -> bool:
    """Whether ``model`` is a Gemini model: an ADK ``Gemini``, or a name ADK reads as one."""
    return isinstance(model, Gemini) or is_gemini_model(model.model)


class SignatureLedger:
    """Which routed key issued each thought signature one ``RoutedLlm`` has seen.

    Shared by every call of the routed model; bounded to the most recent
    signatures. Thread-safe.
    """

    __slots__ = ("_issuers", "_lock")

    def __init__(self) -> None:
        self._issuers: dict[bytes, str] = {}
        self._lock = threading.Lock()

    def record(self, key: str, response: LlmResponse) -> None:
        """Notes ``key`` as the issuer of the signatures on ``response``'s parts."""
        content = response.content
        if content is None or not content.parts:
            return
        for part in content.parts:
            signature = part.thought_signature
            if signature:
                digest = _digest(signature)
                with self._lock:
                    self._issuers.pop(digest, None)
                    self._issuers[digest] = key
                    if len(self._issuers) > _MAX_REMEMBERED:
                        del self._issuers[next(iter(self._issuers))]

    def record_stamped(self, response: LlmResponse) -> None:
        """Notes the key ``response``'s route record names as the issuer of its signatures."""
        route = (response.custom_metadata or {}).get(_METADATA_KEY)
        key = route.get("key") if isinstance(route, Mapping) else None
        if isinstance(key, str):
            self.record(key, response)

    def address(self, llm_request: LlmRequest, key: str, models: Mapping[str, BaseLlm]) -> None:
        """Rewrites ``llm_request``'s signatures, in place, for the model under ``key``.

        Parts are replaced by edited copies, never edited, so a part shared
        with a session event is left as it was. A part left with nothing to
        send once a foreign signature is dropped is left out, and a content
        left with no parts with it.
        """
        contents = llm_request.contents
        to_gemini = _to_gemini(models[key])
        if not to_gemini and not any(
            part.thought_signature for content in contents for part in content.parts or ()
        ):
            return  # Nothing to do: the common case on every model but Gemini.
        issuers = self._issuers_of(contents, models)
        turn_start = _current_turn_start(contents)
        emptied: list[int] = []
        for index, content in enumerate(contents):
            parts = content.parts
            if not parts:
                continue
            first_call = _first_function_call(parts) if to_gemini and index >= turn_start else None
            edited: list[types.Part] = []
            changed = False
            for position, part in enumerate(parts):
                signature = part.thought_signature
                issuer = issuers.get(_digest(signature)) if signature else None
                foreign = issuer is not None and issuer != key
                if position == first_call and (signature is None or foreign):
                    part = part.model_copy(update={"thought_signature": BYPASS_SIGNATURE})
                elif foreign:
                    part = part.model_copy(update={"thought_signature": None})
                    if _hidden_without_signature(part):
                        changed = True
                        continue
                else:
                    edited.append(part)
                    continue
                changed = True
                edited.append(part)
            if not changed:
                continue
            if edited:
                contents[index] = content.model_copy(update={"parts": edited})
            else:
                emptied.append(index)
        for index in reversed(emptied):
            del contents[index]

    def _issuers_of(
        self, contents: Iterable[types.Content], models: Mapping[str, BaseLlm]
    ) -> dict[bytes, str]:
        """The issuer of each signature in ``contents`` that is known, by digest."""
        wanted = {
            _digest(part.thought_signature)
            for content in contents
            for part in content.parts or ()
            if part.thought_signature
        }
        issuers: dict[bytes, str] = {}
        if not wanted:
            return issuers
        with self._lock:
            for digest in wanted:
                known = self._issuers.get(digest)
                if known is not None:
                    issuers[digest] = known
        for event in _session_events.get() or ():
            key = _issuing_key(event, models)
            if key is None or event.content is None:
                continue
            for part in event.content.parts or ():
                if part.thought_signature:
                    digest = _digest(part.thought_signature)
                    if digest in wanted:
                        issuers[digest] = key
        return issuers


def _to_gemini(model: BaseLlm) -> bool:
    """Whether ``model`` checks Gemini's signatures; a nested router adds its own bypasses."""
    from routed_llm.routed import RoutedLlm

    return not isinstance(model, RoutedLlm) and is_gemini(model)


def _issuing_key(event: Event, models: Mapping[str, BaseLlm]) -> str | None:
    """The routed key whose model made ``event``, by its route record (or a nested one).

    A record naming a routed key but another model (the key's model before
    an upgrade, say) names an issuer that is no routed key: the result then
    is the record's ``"key (model)"``, foreign to every key.
    """
    record: Any = (event.custom_metadata or {}).get(_METADATA_KEY)
    earlier: str | None = None
    while isinstance(record, Mapping):
        key, name = record.get("key"), record.get("model")
        model = models.get(key) if isinstance(key, str) else None
        if model is not None and name == model.model:
            return str(key)
        if model is not None and isinstance(name, str):
            earlier = f"{key} ({name})"
        record = record.get("inner")
    return earlier


def _hidden_without_signature(part: types.Part) -> bool:
    """Whether ADK would not have sent ``part`` without a signature: a thought, or nothing left to send.

    A bare signature, or Claude's redacted thinking, is sent only for its
    signature; a part with no data is a 400 on Gemini and an error in ADK's
    Claude adapter.
    """
    if part.function_call or part.function_response or part.tool_call or part.tool_response:
        return False
    return bool(part.thought) or not any(
        getattr(part, name) for name in type(part).model_fields if name not in _NOT_DATA
    )


def _current_turn_start(contents: Sequence[types.Content]) -> int:
    """The index just past the last user message that is not only function responses."""
    for index in range(len(contents) - 1, -1, -1):
        content = contents[index]
        if content.role == "user" and any(part.function_response is None for part in content.parts or ()):
            return index + 1
    return 0


def _first_function_call(parts: Sequence[types.Part]) -> int | None:
    """The position of the first function call among ``parts``, if any."""
    return next((position for position, part in enumerate(parts) if part.function_call is not None), None)


def _digest(signature: bytes) -> bytes:
    return hashlib.blake2b(signature, digest_size=16).digest()

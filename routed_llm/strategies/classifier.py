"""Routing by a classifier's answer: input complexity, topic, personal data, anything a question can tell.

:class:`ClassifierStrategy` asks one question of ADK's own classifier
interface (``google.adk.labs.classifiers``) about what the model would
receive, and routes on the answer, as ADK's ``ClassifierNode`` routes a
workflow.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from google.adk.labs.classifiers import BaseClassifier, Binary, BinaryAnswer, Choice, ChoiceAnswer
from google.adk.models.llm_request import LlmRequest
from google.genai import types

from routed_llm.strategies.base import Decision, RoutingContext, Strategy, _require_callable, _require_key
from routed_llm.strategies.text import request_text

__all__ = ["ClassifierStrategy", "model_input_text"]

logger = logging.getLogger(__name__)

_QUESTION = "route"
_Label = str | bool
_Answer = tuple[_Label, float]  # A label and its probability.
_INVOCATIONS_REMEMBERED = 256
_TEXTS_REMEMBERED = 64  # Per invocation: a tool loop's calls.


def model_input_text(ctx: RoutingContext) -> str:
    """Everything the model would receive, as one text: what :class:`ClassifierStrategy` reads by default.

    The system instruction, then every turn: text, thoughts, and function
    calls and responses as the JSON a model is shown
    (:func:`~routed_llm.strategies.request_text` with ``thoughts=True``, the
    text the hybrid demo's privacy rule reads). Routing agents, the
    conversation the chosen agent will be given: every event of the session
    so far (earlier invocations included) and the user's message.

    Args:
        ctx: The routing context.

    Returns:
        The text, "" for a request with none.
    """
    return request_text(ctx.request or LlmRequest(contents=_model_input(ctx)), thoughts=True)


def _model_input(ctx: RoutingContext) -> list[types.Content]:
    """The contents the model would receive; routing agents, the session's events and the user's message."""
    if ctx.request is not None:
        return ctx.request.contents
    invocation = ctx.invocation_context
    if invocation is None:
        return ctx.contents
    contents = [event.content for event in invocation.session.events if event.content is not None]
    if invocation.user_content is not None and invocation.user_content not in contents:
        contents.append(invocation.user_content)
    return contents


@dataclass(frozen=True)
class ClassifierStrategy(Strategy):
    """Routes the first pick on a classifier's answer to one question about what the model would receive.

    The classifier is any ``google.adk.labs.classifiers.BaseClassifier``:
    an ``LlmClassifier`` over a small, cheap model, or a dedicated decision
    model. It is asked ``question`` about ``text(ctx)``: by default
    :func:`model_input_text`, everything the model would receive (the system
    instruction, every turn, function calls and responses)::

        complexity = ClassifierStrategy(
            LlmClassifier(model="gemini-2.5-flash-lite"),
            Choice(criteria={"simple": "A fact or a short lookup", "complex": "Reasoning, code, plans"}),
            routes={"simple": ON_DEVICE, "complex": CLOUD},
        )
        router = WithFallback(complexity, fallback_order=[CLOUD, ON_DEVICE])

    For a ``Choice``, the label the classifier chose names the key; for a
    ``Binary``, ``True`` when the probability is at least ``threshold``, as
    ADK's ``ClassifierNode`` decides. The label and its probability (for a
    ``Binary`` answered False, one minus the probability of True) are
    recorded with the route as ``label`` and ``label_probability``.

    A ``private`` label's decision is final: its key is picked even when its
    health says it is unavailable, and the call is confined to it
    (:meth:`RoutingContext.confine`), so no fallback tail sends the request
    elsewhere. A privacy gate's classifier must itself run where the text
    may go (on the device): the classifier reads the text before any route
    is chosen.

    Within one invocation (known through :class:`~routed_llm.RoutingPlugin`
    or :func:`~routed_llm.capture_invocation`) no text is classified twice:
    a text classified before gets its answer again; a text that extends one
    classified before (a tool loop's function calls and responses added to
    it) keeps that answer when it is a ``private`` label; otherwise, when
    some labels are ``private``, only the addition is classified, and a
    ``private`` label for it wins; with no ``private`` labels, the answer
    stands for the rest of the invocation.

    With the default ``text``, a request holding media or a file, a tool's
    result included (which no text can show the classifier), is not
    classified: it goes to the key of the ``private`` labels, confined,
    when they share one, and otherwise the strategy makes no decision.

    If the classifier fails (raises, runs past ``timeout``, or answers
    something the question does not allow), the failure is logged once and
    the strategy makes no decision for the rest of the invocation, so
    :class:`FirstMatch` asks its next rule and :class:`WithFallback` its
    tail: a privacy gate's tail must keep the request where the private
    label would. It also makes no decision after a failure, and when a
    label that is not ``private`` names a key that is unavailable: wrap it
    in :class:`WithFallback`.

    Args:
        classifier: The classifier to ask.
        question: A ``Choice`` or a ``Binary`` question.
        routes: Each label of a ``Choice`` to a key, or ``True`` and
            ``False`` to a key for a ``Binary``; every label needs one.
        threshold: For a ``Binary``, the probability at or above which the
            answer is ``True``; a ``Choice`` takes the chosen label as is.
        text: What the classifier reads, a function of the
            :class:`RoutingContext`; :func:`model_input_text` by default.
            Narrow it (``lambda ctx: ctx.input_text``, the turns' text only)
            for a question about the user's words alone.
        timeout: Seconds the classifier may take, None for no limit.
        private: The labels whose key alone may serve the call, e.g.
            ``{True}`` for "Does the request contain personal data?".
    """

    classifier: BaseClassifier
    question: Choice | Binary
    routes: Mapping[str, str] | Mapping[bool, str]
    threshold: float = field(default=0.5, kw_only=True)
    text: Callable[[RoutingContext], str] = field(default=model_input_text, kw_only=True)
    timeout: float | None = field(default=None, kw_only=True)
    private: Collection[str] | Collection[bool] = field(default=frozenset(), kw_only=True)
    _by_label: Mapping[_Label, str] = field(init=False, repr=False, compare=False)
    _memo: _Memo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.classifier, BaseClassifier):
            raise TypeError(
                f"ClassifierStrategy(classifier) takes a google.adk.labs.classifiers.BaseClassifier; got "
                f"{type(self.classifier).__name__}. For a model, wrap it: LlmClassifier(model=...)."
            )
        if not isinstance(self.question, (Choice, Binary)):
            raise TypeError(
                f"ClassifierStrategy(question) is a Choice or a Binary; got {type(self.question).__name__}. "
                "A Score has no label to route on: ask a Choice whose labels are the levels instead."
            )
        threshold = self.threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise ValueError(
                f"ClassifierStrategy(threshold=...) is a probability in [0, 1]; got {threshold!r}."
            )
        if isinstance(self.question, Choice) and threshold != 0.5:
            raise ValueError(
                "ClassifierStrategy(threshold=...) applies to Binary questions only; a Choice routes on "
                "the label the classifier chose. Drop threshold, or ask a Binary."
            )
        _require_callable("ClassifierStrategy(text=...)", self.text)
        timeout = self.timeout
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ValueError(
                f"ClassifierStrategy(timeout=...) is a number of seconds above 0, or None; got {timeout!r}."
            )
        if not isinstance(self.routes, Mapping):
            raise TypeError(
                f"ClassifierStrategy(routes) maps each label to a key, e.g. {{'simple': 'on_device', "
                f"'complex': 'cloud'}}; got {type(self.routes).__name__}."
            )
        labels: frozenset[_Label] = (
            frozenset(self.question.criteria)
            if isinstance(self.question, Choice)
            else frozenset({True, False})
        )
        _check_labels("routes", self.routes, labels)
        missing = labels - set(self.routes)
        if missing:
            raise ValueError(
                f"ClassifierStrategy(routes) has no key for {_labels_text(missing)}; "
                f"map every label of the question ({_labels_text(labels)}) to a key."
            )
        if isinstance(self.private, (str, bool)) or not isinstance(self.private, Collection):
            raise TypeError(
                f"ClassifierStrategy(private=...) is a collection of labels, e.g. {{True}} or "
                f"{{'personal'}}; got {self.private!r}."
            )
        _check_labels("private", self.private, labels)
        for label, key in self.routes.items():
            _require_key(f"ClassifierStrategy(routes)[{label!r}]", key)
        routes: Mapping[_Label, str] = MappingProxyType(dict(self.routes.items()))
        object.__setattr__(self, "routes", routes)
        object.__setattr__(self, "private", frozenset(self.private))
        object.__setattr__(self, "_by_label", routes)
        object.__setattr__(self, "_memo", _Memo())

    @property
    def declared_keys(self) -> frozenset[str]:
        """Every key of ``routes``."""
        return frozenset(self.routes.values())

    async def decide(self, ctx: RoutingContext) -> Decision:
        """Returns the key of the classifier's answer on the first pick, None after a failure."""
        if ctx.is_failover:
            return None
        if self.private and self.text is model_input_text and _unreadable(_model_input(ctx)):
            # The classifier would judge a passport photo by its caption: keep it where private goes.
            keys = {self._by_label[label] for label in self.private}
            key = keys.pop() if len(keys) == 1 else None
            if key is not None:
                ctx.confine(key)
            return key
        text = self.text(ctx)
        if not isinstance(text, str):
            raise TypeError(
                f"ClassifierStrategy(text=...) returned {type(text).__name__}; it returns the text to "
                "classify, a str."
            )
        invocation = ctx.invocation
        answer = await self._answer(invocation.invocation_id if invocation else None, text)
        if answer is None:
            return None
        label, probability = answer
        ctx.annotate(label=label, label_probability=probability)
        key = self._by_label[label]
        if label in self.private:
            ctx.confine(key)
            return key
        return key if ctx.is_available(key) else None

    async def _answer(self, scope: str | None, text: str) -> _Answer | None:
        """The answer for ``text``, from what this invocation classified already where it can."""
        memo = self._memo
        known, answer = memo.lookup(scope, text)
        if known == len(text) or (answer is not None and answer[0] in self.private):
            return answer  # Classified already, or extends a private text: so private too.
        if scope is not None and scope in memo.failed:
            return None  # Failed earlier in this invocation: logged then, the tail decides.
        if known is None or scope is None:
            answer = await self._classify(scope, text)
        elif self.private:
            # The same invocation, with more to read (a tool loop): only the addition is new.
            addition = text[known:].strip()
            extra = await self._classify(scope, addition) if addition else answer
            answer = extra if extra is None or extra[0] in self.private else answer
        # With no private labels, the invocation's first answer stands as its text grows.
        if answer is not None and text:  # "" would start every text.
            memo.remember(scope, text, answer)
        return answer

    async def _classify(self, scope: str | None, text: str) -> _Answer | None:
        """Asks the classifier, within ``timeout``; None (logged once per invocation) when it fails."""
        limit = asyncio.timeout(self.timeout)
        try:
            async with limit:
                response = await self.classifier.classify(input=text, questions={_QUESTION: self.question})
            return self._label(response.answers.get(_QUESTION))
        except Exception:
            name = type(self.classifier).__name__
            if limit.expired():
                logger.warning(
                    "ClassifierStrategy: the classifier %s took over %ss; no decision, the next rule decides.",  # noqa: E501
                    name,
                    self.timeout,
                )
            else:
                logger.warning(
                    "ClassifierStrategy: the classifier %s failed; no decision, the next rule decides.",
                    name,
                    exc_info=True,
                )
        if scope is not None:
            self._memo.fail(scope)
        return None

    def _label(self, answer: object) -> tuple[str | bool, float]:
        """The label the answer names and its probability; ValueError for an answer that does not fit."""
        if answer is None:
            raise ValueError(f"The classifier returned no answer to the question {_QUESTION!r}.")
        if isinstance(self.question, Choice) and isinstance(answer, ChoiceAnswer):
            if answer.choice not in self._by_label:
                raise ValueError(
                    f"The classifier chose {answer.choice!r}, not one of the labels "
                    f"{sorted(self.question.criteria)}."
                )
            return answer.choice, answer.probabilities.get(answer.choice, 0.0)
        if isinstance(self.question, Binary) and isinstance(answer, BinaryAnswer):
            is_true = answer.probability >= self.threshold
            return is_true, answer.probability if is_true else 1.0 - answer.probability
        kind = getattr(answer, "type", type(answer).__name__)
        raise ValueError(f"The classifier answered a {self.question.type} question with {kind!r}.")


def _unreadable(contents: list[types.Content]) -> bool:
    """Whether ``contents`` hold a part no text can show: media, or a file, a tool's result included."""
    for content in contents:
        for part in content.parts or ():
            response = part.function_response
            media = [part, *(response.parts or ())] if response is not None else [part]
            if any(item.inline_data is not None or item.file_data is not None for item in media):
                return True
    return False


def _check_labels(name: str, given: Collection[object], labels: frozenset[_Label]) -> None:
    """Raises when ``given`` names something that is not a label of the question."""
    # 1 == True: a Binary's labels are the bools themselves, not numbers.
    unknown = sorted(
        map(repr, {label for label in given if label not in labels or not isinstance(label, (str, bool))})
    )
    if unknown:
        raise ValueError(
            f"ClassifierStrategy({name}) names {', '.join(unknown)}, not labels of the question; "
            f"its labels are {_labels_text(labels)}."
        )


def _labels_text(labels: frozenset[_Label] | set[_Label]) -> str:
    return ", ".join(sorted(map(repr, labels)))


class _Memo:
    """The answers given so far, by invocation (None: calls whose invocation is unknown).

    Texts are kept as their length and SHA-256 digest, not as text: a
    conversation's text may be long, and may be private.
    """

    def __init__(self) -> None:
        self._answers: OrderedDict[str | None, list[tuple[int, bytes, _Answer]]] = OrderedDict()
        self.failed: OrderedDict[str, None] = OrderedDict()

    def lookup(self, scope: str | None, text: str) -> tuple[int | None, _Answer | None]:
        """The length of the longest text classified in ``scope`` that starts ``text``, and its answer."""
        best: tuple[int | None, _Answer | None] = (None, None)
        for length, digest, answer in self._answers.get(scope, ()):
            if (
                (best[0] is None or length > best[0])
                and length <= len(text)
                and _digest(text[:length]) == digest
            ):
                best = (length, answer)
        return best

    def remember(self, scope: str | None, text: str, answer: _Answer) -> None:
        texts = self._answers.setdefault(scope, [])
        self._answers.move_to_end(scope)
        texts.append((len(text), _digest(text), answer))
        del texts[:-_TEXTS_REMEMBERED]
        while len(self._answers) > _INVOCATIONS_REMEMBERED:
            self._answers.popitem(last=False)

    def fail(self, scope: str) -> None:
        self.failed[scope] = None
        while len(self.failed) > _INVOCATIONS_REMEMBERED:
            self.failed.popitem(last=False)


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()

"""Routing by a classifier's answer: input complexity, topic, anything a question can tell.

:class:`ClassifierStrategy` asks one question of ADK's own classifier
interface (``google.adk.labs.classifiers``) about the text of the request and
routes on the answer, as ADK's ``ClassifierNode`` routes a workflow.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from google.adk.labs.classifiers import BaseClassifier, Binary, BinaryAnswer, Choice, ChoiceAnswer

from routed_llm.strategies.base import Decision, RoutingContext, Strategy, _require_key

__all__ = ["ClassifierStrategy"]

logger = logging.getLogger(__name__)

_QUESTION = "route"


@dataclass(frozen=True)
class ClassifierStrategy(Strategy):
    """Routes the first pick on a classifier's answer to one question about the input.

    The classifier is any ``google.adk.labs.classifiers.BaseClassifier``:
    an ``LlmClassifier`` over a small, cheap model, or a dedicated decision
    model. It is asked ``question`` about :attr:`RoutingContext.input_text`
    (the text of the turns the model will read)::

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

    If the classifier fails (raises, or answers something the question does
    not allow), the failure is logged and the strategy makes no decision,
    so :class:`FirstMatch` asks its next rule and :class:`WithFallback` its
    tail. It also makes no decision when the chosen key is unavailable by
    its health, and after a failure: wrap it in :class:`WithFallback`.

    Args:
        classifier: The classifier to ask.
        question: A ``Choice`` or a ``Binary`` question.
        routes: Each label of a ``Choice`` to a key, or ``True`` and
            ``False`` to a key for a ``Binary``; every label needs one.
        threshold: For a ``Binary``, the probability at or above which the
            answer is ``True``; a ``Choice`` takes the chosen label as is.
    """

    classifier: BaseClassifier
    question: Choice | Binary
    routes: Mapping[str, str] | Mapping[bool, str]
    threshold: float = field(default=0.5, kw_only=True)
    _by_label: Mapping[str | bool, str] = field(init=False, repr=False, compare=False)

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
        if not isinstance(self.routes, Mapping):
            raise TypeError(
                f"ClassifierStrategy(routes) maps each label to a key, e.g. {{'simple': 'on_device', "
                f"'complex': 'cloud'}}; got {type(self.routes).__name__}."
            )
        labels: frozenset[str | bool] = (
            frozenset(self.question.criteria)
            if isinstance(self.question, Choice)
            else frozenset({True, False})
        )
        given = set(self.routes)
        # 1 == True: a Binary's labels are the bools themselves, not numbers.
        unknown = sorted(
            map(repr, {label for label in given if label not in labels or not isinstance(label, (str, bool))})
        )
        if unknown:
            raise ValueError(
                f"ClassifierStrategy(routes) names {', '.join(unknown)}, not labels of the question; "
                f"its labels are {_labels_text(labels)}."
            )
        missing = labels - given
        if missing:
            raise ValueError(
                f"ClassifierStrategy(routes) has no key for {_labels_text(missing)}; "
                f"map every label of the question ({_labels_text(labels)}) to a key."
            )
        for label, key in self.routes.items():
            _require_key(f"ClassifierStrategy(routes)[{label!r}]", key)
        routes: Mapping[str | bool, str] = MappingProxyType(
            {label: key for label, key in self.routes.items()}
        )
        object.__setattr__(self, "routes", routes)
        object.__setattr__(self, "_by_label", routes)

    @property
    def declared_keys(self) -> frozenset[str]:
        """Every key of ``routes``."""
        return frozenset(self.routes.values())

    async def decide(self, ctx: RoutingContext) -> Decision:
        """Returns the key of the classifier's answer on the first pick, None after a failure."""
        if ctx.is_failover:
            return None
        try:
            response = await self.classifier.classify(
                input=ctx.input_text, questions={_QUESTION: self.question}
            )
            label, probability = self._label(response.answers.get(_QUESTION))
        except Exception:
            logger.warning(
                "ClassifierStrategy: the classifier %s failed; no decision, the next rule decides.",
                type(self.classifier).__name__,
                exc_info=True,
            )
            return None
        ctx.annotate(label=label, label_probability=probability)
        key = self._by_label[label]
        return key if ctx.is_available(key) else None

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


def _labels_text(labels: frozenset[str | bool] | set[str | bool]) -> str:
    return ", ".join(sorted(map(repr, labels)))

"""Judges for ``RoutedLlm(accept=...)``: accept an answer, or send the call on.

A judge is any function ``judge(key, response) -> bool | str``, sync or
async (see :data:`~routed_llm.routing.Judge`). :func:`min_confidence` is the
one for "answer on the device, and escalate to the cloud when it is unsure"::

    llm = RoutedLlm(
        models={
            "on_device": LlamaCppLlm(),
            "cloud": Gemini(model="gemini-2.5-flash", retry_options=types.HttpRetryOptions(attempts=1)),
        },
        router=FallbackStrategy(["on_device", "cloud"]),
        accept={"on_device": min_confidence(0.6)},
    )
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Literal

from google.adk.models.llm_response import LlmResponse

from routed_llm.routing import Judge, annotate_route

__all__ = ["Judge", "min_confidence"]

logger = logging.getLogger(__name__)


class _MinConfidence:
    """The judge :func:`min_confidence` returns."""

    def __init__(self, threshold: float, missing: Literal["accept", "reject"]) -> None:
        self._threshold = threshold
        self._missing = missing
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, key: str, response: LlmResponse) -> bool | str:
        average = response.avg_logprobs
        if average is None or math.isnan(average):
            if self._missing == "reject":
                return f"the answer of {key!r} carries no log-probabilities to judge its confidence by"
            with self._lock:
                first = key not in self._warned
                self._warned.add(key)
            if first:
                logger.warning(
                    "Model key %r answered without log-probabilities (avg_logprobs); min_confidence "
                    "accepts such answers unjudged (pass missing='reject' to reject them).",
                    key,
                )
            return True
        confidence = math.exp(average)
        annotate_route(confidence=confidence)
        if confidence >= self._threshold:
            return True
        return f"confidence {confidence:.3f} is below {self._threshold:g}"

    def __repr__(self) -> str:
        return f"min_confidence({self._threshold!r}, missing={self._missing!r})"


def min_confidence(threshold: float, *, missing: Literal["accept", "reject"] = "accept") -> Judge:
    """A judge that accepts an answer the model is confident enough of.

    The confidence is ``exp(avg_logprobs)`` of the answer's final response:
    the geometric mean of its tokens' probabilities, between 0 and 1. It is
    recorded in the route record as ``confidence``, whatever the verdict.

    Args:
        threshold: The lowest confidence accepted, above 0 and at most 1.
        missing: What to do with an answer that carries no
            log-probabilities: ``"accept"`` it (a warning is logged once per
            key), or ``"reject"`` it.

    Returns:
        The judge, for ``RoutedLlm(accept=...)``.

    Raises:
        TypeError: If ``threshold`` is not a number.
        ValueError: If ``threshold`` is not above 0 and at most 1, or
            ``missing`` is neither ``"accept"`` nor ``"reject"``.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(
            f"min_confidence(threshold=...) is a number between 0 and 1; got {type(threshold).__name__}."
        )
    if not 0.0 < threshold <= 1.0:
        raise ValueError(
            f"min_confidence(threshold={threshold!r}) must be above 0 and at most 1: it is compared "
            "with exp(avg_logprobs), a probability."
        )
    if missing not in ("accept", "reject"):
        raise ValueError(f"min_confidence(missing={missing!r}) must be 'accept' or 'reject'.")
    return _MinConfidence(float(threshold), missing)

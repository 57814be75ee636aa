"""Route by input complexity: a small model classifies each request, simple ones stay small.

``ClassifierStrategy`` asks ADK's own ``LlmClassifier`` (here over a small,
cheap model) a ``Choice`` question about the request, and routes on the label
it picks. Wrapped in ``WithFallback``, a request the classifier cannot judge
(the third one: the small model answers with prose, not the JSON asked for)
goes to the large model, as would one whose small model fails.

Runs offline: the models are ``routed_llm.testing`` fakes standing in for, say,
``gemini-2.5-flash-lite`` (the classifier and the small model) and
``gemini-2.5-pro``.

Run: ``python examples/routers/by_complexity.py``
"""

from __future__ import annotations

import asyncio
import json
import logging

from google.adk.labs.classifiers import Choice, LlmClassifier
from google.adk.models.llm_request import LlmRequest
from google.genai import types

from routed_llm import ClassifierStrategy, RoutedLlm
from routed_llm.strategies import WithFallback
from routed_llm.testing import ScriptedLlm

HARD_WORDS = ("why", "prove", "plan", "compare", "debug")


def small_classifier_model(request: LlmRequest) -> str:
    """Stands in for a small model answering the classifier's JSON schema."""
    text = "".join(part.text or "" for content in request.contents for part in content.parts or ())
    if "?!" in text:
        return "Hmm, hard to say."  # Not the JSON asked for: the classifier fails.
    hard = sum(word in text.lower() for word in HARD_WORDS)
    complex_share = min(0.95, 0.1 + 0.4 * hard)
    answer = {"simple": 1 - complex_share, "complex": complex_share}
    return json.dumps(dict.fromkeys(request.config.response_schema["required"], answer))  # Each question.


COMPLEXITY = Choice(
    instructions="How much reasoning does answering this request take?",
    criteria={
        "simple": "A fact, a definition, a short lookup or a one-line reply.",
        "complex": "Reasoning over several steps, planning, comparing, proving or debugging.",
    },
)

llm = RoutedLlm(
    models={
        "small": ScriptedLlm(model="small-model", script=lambda request: "a quick answer"),
        "large": ScriptedLlm(model="large-model", script=lambda request: "a careful answer"),
    },
    router=WithFallback(
        ClassifierStrategy(
            LlmClassifier(model=ScriptedLlm(model="classifier-model", script=small_classifier_model)),
            COMPLEXITY,
            routes={"simple": "small", "complex": "large"},
        ),
        fallback_order=["large"],
    ),
)


async def main() -> None:
    questions = (
        "What is the capital of Peru?",
        "Plan a week in Peru and compare the routes: why is one better?",
        "Peru?!",
    )
    for question in questions:
        request = LlmRequest(contents=[types.Content(role="user", parts=[types.Part(text=question)])])
        async for response in llm.generate_content_async(request):
            record = response.custom_metadata["routed_llm"]
            label = (
                f"{record['label']} ({record['label_probability']:.2f})"
                if "label" in record
                else "no label (the classifier failed)"
            )
            print(f"{question!r}: {label} -> {record['key']}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)  # The classifier's failure is a logged warning.
    asyncio.run(main())

"""A custom async router that picks a model with a cheap classifier.

Short factual questions go to the fast model; anything that looks like
reasoning or code goes to the strong one. If the chosen model fails before
answering, the other one is tried.

Run: ``python examples/routers/classifier_router.py``
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping

from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest

from routed_llm import ErrorContext, RoutedLlm
from routed_llm.testing import ScriptedLlm

HARD = re.compile(r"\b(why|prove|explain|step by step|code|debug|compare)\b", re.IGNORECASE)


async def classify(text: str) -> str:
    """Stands in for a real classifier call (a small model, an embedding lookup)."""
    await asyncio.sleep(0)
    return "hard" if HARD.search(text) or len(text) > 200 else "easy"


async def router(
    models: Mapping[str, BaseLlm], llm_request: LlmRequest, error_context: ErrorContext | None
) -> str | None:
    if error_context is not None:
        untried = [key for key in models if key not in error_context.failed_keys]
        return untried[0] if untried else None
    last = llm_request.contents[-1].parts[0].text if llm_request.contents else ""
    return "strong" if await classify(last or "") == "hard" else "fast"


llm = RoutedLlm(
    models={
        "fast": ScriptedLlm(model="fast-model", script=lambda request: "fast answer"),
        "strong": ScriptedLlm(model="strong-model", script=lambda request: "careful answer"),
    },
    router=router,
)


async def main() -> None:
    from google.genai import types

    for question in ("What is the capital of Peru?", "Explain why the sky is blue, step by step."):
        request = LlmRequest(contents=[types.Content(role="user", parts=[types.Part(text=question)])])
        async for response in llm.generate_content_async(request):
            print(f"{question!r} -> {response.custom_metadata['routed_llm']['key']}")


if __name__ == "__main__":
    asyncio.run(main())

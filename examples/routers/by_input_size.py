"""Route by input size: short prompts to a small model, long ones to a large one.

``InputSizeStrategy`` counts the text of every turn of the conversation.
Wrapped in ``WithFallback``, a failing small model hands over to the large one.

Run: ``python examples/routers/by_input_size.py``
"""

from __future__ import annotations

import asyncio

from google.adk.models.llm_request import LlmRequest
from google.genai import types

from routed_llm import RoutedLlm
from routed_llm.strategies import InputSizeStrategy, WithFallback
from routed_llm.testing import ScriptedLlm

llm = RoutedLlm(
    models={
        "small": ScriptedLlm(model="small-model", script=lambda request: "small model answer"),
        "large": ScriptedLlm(model="large-model", script=lambda request: "large model answer"),
    },
    router=WithFallback(
        InputSizeStrategy(max_chars=500, small="small", large="large"), fallback_order=["large"]
    ),
)


async def main() -> None:
    for text in ("Summarise: the cat sat.", "Summarise: " + "a long report paragraph. " * 40):
        request = LlmRequest(contents=[types.Content(role="user", parts=[types.Part(text=text)])])
        async for response in llm.generate_content_async(request):
            print(f"{len(text)} chars -> {response.custom_metadata['routed_llm']['key']}")


if __name__ == "__main__":
    asyncio.run(main())

"""What scoring tokens costs ``LlamaCppLlm``: the log-probability of each token, beside generating it.

Times the per-token scoring (the log-softmax over SmolLM2's 49,152-token
vocabulary, and with ``logprobs=k`` the ``k`` likeliest tokens) and, for
scale, a whole generation per token. Needs the ``ondevice`` extra.

Run ``python benchmarks/logprobs_cost.py``; ``docs/on-device.md`` quotes it.
"""

from __future__ import annotations

import asyncio
import time
import timeit

from google.adk.models.llm_request import LlmRequest
from google.genai import types

from routed_llm.ondevice import LlamaCppLlm

REPEATS = 2000
STORY = LlmRequest(
    contents=[types.Content(role="user", parts=[types.Part(text="Write a story about a cat.")])],
    config=types.GenerateContentConfig(temperature=0.0, max_output_tokens=100),
)


async def main() -> None:
    device = LlamaCppLlm(n_ctx=512)
    await device.load()
    started = time.perf_counter()
    tokens = 0
    for _ in range(3):
        async for response in device.generate_content_async(STORY):
            assert response.usage_metadata is not None
            tokens += response.usage_metadata.candidates_token_count or 0
    generating = (time.perf_counter() - started) / tokens

    runtime = device._runtime  # The loaded llama.cpp runtime, whose last logits are scored.
    token = runtime.tokenize(b" cat", add_bos=False)[0]
    costs = {}
    for top in (0, 5):
        runtime.routed_top_logprobs = top
        costs[top] = timeit.timeit(lambda: runtime.routed_score(token), number=REPEATS) / REPEATS
    print(f"generating: {generating * 1e3:.1f} ms a token (scoring included)")
    print(f"scoring: {costs[0] * 1e6:.0f} us a token; with logprobs=5: {costs[5] * 1e6:.0f} us")


if __name__ == "__main__":
    asyncio.run(main())

"""Retry the primary once, then fall back: the same model under two keys.

Each key runs at most once per call, so a retry is simply the same model
registered twice. The router tries "primary", then "primary_retry", then
"fallback"; ``is_transient`` keeps permanent errors from being retried.

Run: ``python examples/routers/retry_then_fallback.py``
"""

from __future__ import annotations

import asyncio
import logging

from google.adk.models.llm_request import LlmRequest
from google.genai import types

from routed_llm import RoutedLlm
from routed_llm.strategies import FallbackStrategy
from routed_llm.testing import ScriptedLlm

# One flaky primary: fails its first call, answers its second.
primary = ScriptedLlm(model="gemini-2.5-flash", script=[ConnectionError("blip"), "primary answered on retry"])
fallback = ScriptedLlm(model="gemini-2.5-pro", script=["fallback answered"])

llm = RoutedLlm(
    models={"primary": primary, "primary_retry": primary, "fallback": fallback},
    router=FallbackStrategy(["primary", "primary_retry", "fallback"]),
)


async def main() -> None:
    logging.getLogger("routed_llm").setLevel(logging.ERROR)
    request = LlmRequest(contents=[types.Content(role="user", parts=[types.Part(text="Hi")])])
    async for response in llm.generate_content_async(request):
        route = response.custom_metadata["routed_llm"]
        print(f"{response.content.parts[0].text} (key {route['key']!r}, after {route['failed_keys']})")


if __name__ == "__main__":
    asyncio.run(main())

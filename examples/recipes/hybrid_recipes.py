"""The three Genkit recipes on scripted stand-in models, printed side by side.

Run: ``python examples/recipes/hybrid_recipes.py``
"""

from __future__ import annotations

import asyncio
import logging

from google.adk.models.llm_request import LlmRequest
from google.genai import types

from routed_llm import RoutedLlm, hybrid_model_on_device_cloud
from routed_llm.strategies import (
    CLOUD,
    ON_DEVICE,
    PREFER_IN_CLOUD,
    PREFER_ON_DEVICE,
    ConnectivityStrategy,
    FallbackStrategy,
    FirstMatch,
    PreRoutingStrategy,
    Strategy,
    WithFallback,
)
from routed_llm.testing import ScriptedLlm


def build(strategy: Strategy, *, cloud_down: bool) -> RoutedLlm:
    device = ScriptedLlm(model="device-model", script=lambda request: "answered on device")
    cloud = ScriptedLlm(
        model="cloud-model",
        script=lambda request: (
            ConnectionError("cloud unreachable") if cloud_down else "answered in the cloud"
        ),
    )
    return hybrid_model_on_device_cloud(on_device=device, cloud=cloud, strategy=strategy)


def rule_then_fallback(*, opted_out: bool) -> WithFallback:
    return WithFallback(
        FirstMatch(
            [
                PreRoutingStrategy(lambda ctx: ON_DEVICE if opted_out else ""),
                ConnectivityStrategy(is_online=lambda: True, online=CLOUD, offline=ON_DEVICE),
            ]
        ),
        fallback_order=[ON_DEVICE],
    )


async def ask(llm: RoutedLlm) -> str:
    request = LlmRequest(contents=[types.Content(role="user", parts=[types.Part(text="Hi!")])])
    try:
        async for response in llm.generate_content_async(request):
            route = response.custom_metadata["routed_llm"]
            return f"{route['key']:<9} (failed before it: {route['failed_keys'] or 'none'})"
    except ConnectionError as error:
        return f"error propagated: {error}"
    return "no response"


async def main() -> None:
    logging.getLogger("routed_llm").setLevel(logging.ERROR)
    recipes = {
        "PREFER_ON_DEVICE": FallbackStrategy(PREFER_ON_DEVICE),
        "PREFER_IN_CLOUD": FallbackStrategy(PREFER_IN_CLOUD),
        "rule, then fall back (opted in)": rule_then_fallback(opted_out=False),
        "rule, then fall back (opted out)": rule_then_fallback(opted_out=True),
    }
    for name, strategy in recipes.items():
        for cloud_down in (False, True):
            served = await ask(build(strategy, cloud_down=cloud_down))
            print(f"{name:<34} cloud {'down' if cloud_down else 'up  '} -> {served}")


if __name__ == "__main__":
    asyncio.run(main())

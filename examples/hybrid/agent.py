"""An ADK agent that answers on-device when it must and in the cloud when it can.

The model is the seed's "route by rule, then fall back" recipe over a real
on-device model (SmolLM2-135M on llama.cpp) and Gemini:

1. a privacy rule (``privacy.py``) keeps requests that mention private
   matters on the device: it reads everything the cloud would receive;
2. otherwise the cloud is used when it is reachable (a ``GOOGLE_API_KEY`` is
   set), the device when it is not;
3. after a failure only the device is tried, so a private prompt never
   reaches the cloud, and a cloud outage, or a stale or invalid cloud key
   (``fall_back_across_providers``), lands on the device.

``adk run examples/hybrid`` and ``adk web examples`` pick up ``root_agent``;
``python examples/hybrid/run.py`` asks it a few questions and says why each
answer came from where it did.
"""

from __future__ import annotations

import os

from google.adk.agents import LlmAgent
from google.adk.models import Gemini
from google.genai import types

from routed_llm import fall_back_across_providers, hybrid_model_on_device_cloud
from routed_llm.ondevice import LlamaCppLlm
from routed_llm.strategies import (
    CLOUD,
    ON_DEVICE,
    ConnectivityStrategy,
    FirstMatch,
    PreRoutingStrategy,
    WithFallback,
)

from .privacy import privacy_rule


def cloud_reachable() -> bool:
    """The cloud can be tried when there is a key for it (the network is tried for real)."""
    return bool(os.environ.get("GOOGLE_API_KEY") or os.environ.get("GEMINI_API_KEY"))


on_device = LlamaCppLlm(n_ctx=2048)
cloud = Gemini(model="gemini-2.5-flash", retry_options=types.HttpRetryOptions(attempts=1))

root_agent = LlmAgent(
    name="hybrid_assistant",
    model=hybrid_model_on_device_cloud(
        on_device=on_device,
        cloud=cloud,
        strategy=WithFallback(
            FirstMatch(
                [
                    PreRoutingStrategy(privacy_rule),
                    ConnectivityStrategy(is_online=cloud_reachable, online=CLOUD, offline=ON_DEVICE),
                ]
            ),
            fallback_order=[ON_DEVICE],
            # Cloud and device are different providers: a stale cloud key lands on the device.
            is_transient=fall_back_across_providers,
        ),
    ),
    instruction="You are a helpful assistant. Answer in one short sentence.",
    generate_content_config=types.GenerateContentConfig(temperature=0.0, max_output_tokens=48),
)

"""An ADK agent that answers on-device when it must and in the cloud when it can.

The model routes "device first, cloud if unsure" over a real on-device
model (SmolLM2-135M on llama.cpp) and Gemini:

1. every request goes to the device first; a privacy rule (``privacy.py``)
   marks the ones that mention private matters, reading everything the
   cloud would receive;
2. the device's answer is judged by ``min_confidence``: accepted when the
   device is confident enough of it, otherwise held back. An answer without
   log-probabilities is not trusted (``missing="reject"``);
3. a public request whose device answer was unsure (or that the device
   failed) goes to the cloud when it is reachable (a ``GOOGLE_API_KEY`` is
   set); a private one never does;
4. when no other model serves (no key, a cloud outage, a stale or invalid
   key), the device's unsure answer is output after all, marked
   ``rejected``: an unsure answer beats none.

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
from routed_llm.judges import min_confidence
from routed_llm.ondevice import LlamaCppLlm
from routed_llm.strategies import CLOUD, ON_DEVICE, RoutingContext, Strategy

from .privacy import privacy_rule


def cloud_reachable() -> bool:
    """The cloud can be tried when there is a key for it (the network is tried for real)."""
    return bool(os.environ.get("GOOGLE_API_KEY") or os.environ.get("GEMINI_API_KEY"))


MIN_CONFIDENCE = float(os.environ.get("HYBRID_DEMO_MIN_CONFIDENCE", "0.6"))
"""The device's answers below this confidence, exp(avg_logprobs), go to the cloud.

Set ``HYBRID_DEMO_MIN_CONFIDENCE=1`` to send every public question on to the cloud.
"""


class DeviceFirstCloudIfUnsure(Strategy):
    """The device first; after it failed or was unsure, the cloud, for public prompts only."""

    @property
    def declared_keys(self) -> frozenset[str]:
        return frozenset({ON_DEVICE, CLOUD})

    def decide(self, ctx: RoutingContext) -> str | None:
        private = privacy_rule(ctx) == ON_DEVICE  # Also records why a private prompt stays local.
        if not ctx.is_failover:
            return ON_DEVICE
        assert ctx.error_context is not None
        if private or CLOUD in ctx.failed_keys or not cloud_reachable():
            return None  # No one else: the device's unsure answer is output (or its error raised).
        # Cloud and device are different providers: a device failure of any kind may go to the cloud.
        return CLOUD if fall_back_across_providers(ctx.error_context.last_error) else None


on_device = LlamaCppLlm(n_ctx=2048)
cloud = Gemini(model="gemini-2.5-flash", retry_options=types.HttpRetryOptions(attempts=1))

root_agent = LlmAgent(
    name="hybrid_assistant",
    model=hybrid_model_on_device_cloud(
        on_device=on_device,
        cloud=cloud,
        strategy=DeviceFirstCloudIfUnsure(),
        accept={ON_DEVICE: min_confidence(MIN_CONFIDENCE, missing="reject")},
    ),
    instruction="You are a helpful assistant. Answer in one short sentence.",
    generate_content_config=types.GenerateContentConfig(temperature=0.0, max_output_tokens=48),
)

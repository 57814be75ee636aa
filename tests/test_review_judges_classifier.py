"""Adversarial review of issue 20: judges under the deadline, classifier gates, on-device output."""

from __future__ import annotations

from google.adk.agents import LlmAgent
from google.adk.models.llm_request import LlmRequest
from google.genai import types

from routed_llm import hybrid_model_on_device_cloud
from routed_llm.strategies import CLOUD, ON_DEVICE, WithFallback
from routed_llm.testing import ScriptedLlm
from tests.test_classifier_strategy import pii_detector, privacy_gate, run_with_plugin

SCAN = b"\x89PNG\r\n\x1a\n scanned passport"


def fetch_scanned_id() -> types.Part:
    """Returns the user's scanned ID card (a tool for the tests): an image, no text."""
    return types.Part.from_bytes(data=SCAN, mime_type="image/png")


def calls_the_scanner_then_answers(name: str) -> ScriptedLlm:
    """A model that calls ``fetch_scanned_id`` once, then answers."""

    def reply(request: LlmRequest) -> types.Part | str:
        if any(part.function_response for content in request.contents for part in content.parts or ()):
            return f"{name} read the scan"
        return types.Part(function_call=types.FunctionCall(name="fetch_scanned_id", args={}))

    return ScriptedLlm(model=name, script=reply)


def carries_the_scan(request: LlmRequest) -> bool:
    return any(
        media.inline_data is not None and media.inline_data.data == SCAN
        for content in request.contents
        for part in content.parts or ()
        if part.function_response is not None
        for media in part.function_response.parts or ()
    )


async def test_an_image_a_tool_returns_goes_where_private_requests_go_never_to_the_cloud():
    device = calls_the_scanner_then_answers(ON_DEVICE)
    cloud = calls_the_scanner_then_answers(CLOUD)
    llm = hybrid_model_on_device_cloud(
        on_device=device,
        cloud=cloud,
        strategy=WithFallback(privacy_gate(pii_detector()), fallback_order=[CLOUD, ON_DEVICE]),
    )
    agent = LlmAgent(name="assistant", model=llm, tools=[fetch_scanned_id])

    await run_with_plugin(agent, "Please check my ID card.")

    assert [carries_the_scan(call) for call in cloud.calls] == [False]
    assert [carries_the_scan(call) for call in device.calls] == [True]
